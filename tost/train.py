"""The one training loop, used by the train stage and by every method that trains a dense network.

SGD with momentum and weight decay on every parameter, a per-epoch LR schedule (multistep as in the
paper, or cosine), the mask enforced after every optimizer step by one fused multiply, and the tricks'
hooks. Per-step numbers are accumulated on the device and read once per epoch, so a step never waits
for the host. Validation and test accuracy are measured after every epoch; the reported accuracy is
the test accuracy at the epoch of best validation accuracy (model selection on val, as upstream)
and at the last epoch.

A resume file, written atomically after every epoch, holds everything needed to continue after a
kill (model, optimizer, scheduler, RNG and data-order states, history); continuing from it gives the
same result as an uninterrupted run.

Several processes (`train.nproc`, launched by torchrun; see `tost.distributed`) run this same loop:
each rank trains on its shard of every global batch inside DDP, with global-batch BN statistics, so
the result is the single-process one up to float rounding; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost import distributed
from tost.config import DataConfig, TrainConfig
from tost.data import Prepared
from tost.errors import CheckpointError, MaskError, TrainingError, first_line
from tost.loader import make_loaders
from tost.resume import ResumeDir
from tost.runtime import Runtime, rng_state, set_rng_state
from tost.sparsity.mask import Enforcer, Mask, measured_stats
from tost.step import Backend, CudaGraphs, EpochSums, Evaluation, Graphed, at_least_fp32, sgd_step
from tost.summary import count_weights, summarize

if TYPE_CHECKING:  # the loop calls the tricks' hooks; it needs no trick module to run
    from tost.tricks.base import Trick

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """The trained (plain, finished) model, one row per epoch, and the summary metrics."""

    model: nn.Module
    history: list[dict[str, float]]
    summary: dict[str, Any]
    mask: Mask | None = None  # the mask at the end (gradual pruning changes it mid-run)
    extra: dict[str, Any] = field(default_factory=dict)  # what the epoch hooks kept (Trainer.extra)


def clock(seconds: float) -> str:
    """`1m05s`, `2h03m`, `45s`: a duration a person reads at a glance."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch LR: ×gamma at each milestone (the paper's 90/135 of 182), or cosine to 0."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)


def _loss_fn(tricks: Sequence[Trick]) -> Callable[[Tensor, Tensor], Tensor]:
    """The trick that defines a loss (`build_variant` allows at most one), else cross-entropy."""
    owner = next((t for t in tricks if t.overrides_loss), None)
    return F.cross_entropy if owner is None else owner.loss


STATE_KEYS = {
    "epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "history": list, "train_time": float,
    "data_rng": Tensor, "rng": dict, "mask": dict, "extra": dict,
}  # fmt: skip


def check_state(state: Mapping[str, Any], where: object) -> None:
    """A resume file's state has every part `Trainer.state` writes, of the right kind, or is refused.

    Its fingerprint matched, so it is this run's; a damaged one (a flipped bit in a key) must stop
    the run with one line rather than resume half-loaded.
    """
    wrong = [k for k, kind in STATE_KEYS.items() if not isinstance(state.get(k), kind)]
    if wrong:
        raise CheckpointError(
            f"{where}: a damaged resume file (missing or wrong: {', '.join(wrong)}); delete it"
        )


class Diverged(TrainingError):
    """The loss of a step became NaN or infinite (`train.on_divergence` says what happens next)."""

    def __init__(self, name: str, epoch: int, step: int) -> None:
        super().__init__(
            f"{name}: loss became non-finite at epoch {epoch}, step {step}; "
            "the last good epoch's checkpoint is kept. Lower train.lr or set train.max_grad_norm"
        )
        self.epoch, self.step = epoch, step


class Trainer:
    """Holds the pieces of one training run so that epochs, checkpoints and resume share them."""

    def __init__(
        self,
        model: nn.Module,
        mask: Mask,
        data: Prepared,
        dcfg: DataConfig,
        cfg: TrainConfig,
        tricks: Sequence[Trick],
        rt: Runtime,
        seed: int,
        name: str = "train",
        graphs: Backend | None = None,
    ) -> None:
        """`graphs` captures the steps (default: CUDA graphs when `rt.cuda_graphs`, one process)."""
        if graphs is not None and rt.world_size > 1:  # a graph would replay DDP's all-reduces as captured
            raise TrainingError(f"{name}: a captured step runs in one process only, not {rt.world_size}")
        self.cfg, self.rt, self.tricks, self.name = cfg, rt, list(tricks), name
        self.mask, self.mask_version = mask, 0
        model = model.to(rt.device, memory_format=rt.memory_format)
        self.train_loader, self.val_loader, self.test_loader = make_loaders(data, dcfg, cfg, rt, seed)
        weights = self._weights(model)
        mask.check(weights)
        mask.apply_(weights)
        for t in self.tricks:
            model = t.prepare(model, mask, lambda: iter(self.train_loader))
        self.model = model.to(rt.device, memory_format=rt.memory_format)
        self.weights_trained = count_weights(self.model, mask)
        self.enforce = Enforcer(mask, self._weights(self.model))
        nesterov = cfg.nesterov and cfg.momentum > 0
        self.opt = torch.optim.SGD(self.model.parameters(), cfg.lr, cfg.momentum, nesterov=nesterov,
                                   weight_decay=cfg.weight_decay)  # fmt: skip
        self.sched = make_scheduler(self.opt, cfg)
        self._synced_bn: list[nn.Module] = []
        if rt.world_size > 1:  # tricks were prepared on whole batches; from here on each rank has a shard
            distributed.assert_same(mask.tensors, rt.device, f"{name}: mask", MaskError)
            self._synced_bn = distributed.sync_batchnorm(self.model)
            for loader in (self.train_loader, self.val_loader, self.test_loader):
                loader.set_shard(rt.rank, rt.world_size)
        self._rewrap()
        self.loss = _loss_fn(self.tricks)
        if graphs is None and rt.cuda_graphs and rt.world_size == 1:
            graphs = CudaGraphs()
        self.graph = Graphed(self._graph_step, graphs, name) if graphs is not None else None
        self.evaluations = [
            Evaluation(self.model, ld, rt, graphs) for ld in (self.val_loader, self.test_loader)
        ]
        self.sums = EpochSums(rt.device)
        # What a captured step reads; the grads' dtype keeps `_foreach_mul` on its fused path.
        self.lr = torch.zeros((), device=rt.device, dtype=next(self.model.parameters()).dtype)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.train_time = 0.0
        self.checkpoint_time = 0.0  # writing resume files: wall time the step time does not show
        self.wall_time = 0.0  # this process's epochs, wall clock: the progress line's elapsed and ETA
        self.resumed_at = 0  # epochs a resume file brought (not timed by this process)
        # State of the `on_epoch_end` hooks (a rewind snapshot, a pruning schedule): saved in the
        # resume file with the mask, so a resumed run continues exactly where the killed one stopped.
        self.extra: dict[str, Any] = {}
        self.diverged: tuple[int, int] | None = None  # (epoch, step) where `on_divergence: stop` stopped

    def set_mask(self, mask: Mask) -> None:
        """Switch to a new mask mid-training (gradual pruning): zero newly pruned weights from now on."""
        weights = self._weights(self.model)
        mask.check(weights)
        mask.apply_(weights)
        self.mask = mask
        if self.enforce.covers(mask):  # the same layers: new values in the tensors a graph holds
            self.enforce.update(mask)
        else:
            self.enforce = Enforcer(mask, weights)
            self.mask_version += 1  # a captured step enforces the tensors it was captured with

    def _rewrap(self) -> None:
        """(Re)build what a step calls; DDP registers the parameters that train when it is built."""
        self.forward = distributed.wrap(self.model, self.rt)
        self._trainable = [p.requires_grad for p in self.model.parameters()]

    def _weights(self, model: nn.Module) -> dict[str, Tensor]:
        params = dict(model.named_parameters())
        return {n: params[n] for n in self.mask.tensors if n in params}

    def _step(self, idx: Tensor, oy: Tensor | None, ox: Tensor | None, flips: Tensor | None,
              lr: float | Tensor, step: int = 0) -> list[Tensor]:  # fmt: skip
        """One optimisation step on the batch `idx`; the grads it made are returned (a graph keeps them)."""
        x, y = self.train_loader.batch(idx, (oy, ox, flips))
        with self.rt.autocast():
            logits = self.forward(x)
        if self.rt.world_size > 1:
            global_n = self.train_loader.global_batch_size(step)
            loss, objective = distributed.shard_objective(self.loss, logits, y, self.rt.world_size, global_n)
        else:
            loss = objective = self.loss(at_least_fp32(logits), y)
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        if self.cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        sgd_step(self.opt, lr)
        self.enforce()
        self.sums.record(loss, logits, y)
        return [p.grad for p in self.model.parameters() if p.grad is not None]

    def _graph_step(
        self, idx: Tensor, oy: Tensor | None, ox: Tensor | None, flips: Tensor | None
    ) -> list[Tensor]:
        return self._step(idx, oy, ox, flips, self.lr)

    def graph_key(self) -> Hashable:
        """What a captured step depends on besides tensor values: what trains, the tricks', the mask."""
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        return trainable, tuple(t.graph_key() for t in self.tricks), self.mask_version

    def train_epoch(self) -> tuple[float, float, float]:
        """One pass over the training split; returns mean loss, accuracy (%) and seconds."""
        model, rt, epoch = self.model, self.rt, self.epoch
        for t in self.tricks:
            t.on_epoch_start(epoch, self.cfg.epochs, model)
        if rt.world_size > 1 and [p.requires_grad for p in model.parameters()] != self._trainable:
            self._rewrap()
        model.train()
        self.sums.reset()
        lr = self.opt.param_groups[0]["lr"]
        self.lr.fill_(lr)
        key, full = self.graph_key(), self.train_loader.batch_size
        start = time.perf_counter()
        for step, (idx, draws) in enumerate(self.train_loader.plan()):
            if self.graph is not None and len(idx) == full:
                self.graph(key, [idx, *draws])
            else:  # the CPU, several processes, or the last, shorter batch
                self._step(idx, *draws, lr=lr, step=step)
        mean_loss, acc, bad_step = self.sums.read(self.train_loader.num_images, rt.world_size)
        seconds = time.perf_counter() - start
        if bad_step >= 0:
            raise Diverged(self.name, epoch + 1, bad_step + 1)
        return mean_loss, acc, seconds

    def run_epoch(self) -> dict[str, float]:
        wall = time.perf_counter()
        lr = self.opt.param_groups[0]["lr"]
        train_loss, train_acc, seconds = self.train_epoch()
        with warnings.catch_warnings():  # the update is `sgd_step`, so torch never sees `opt.step()`
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.sched.step()
        self.train_time += seconds
        key, (val, test) = self.graph_key(), self.evaluations
        val_loss, val_acc = val(key)
        best_so_far = all(val_acc > r["val_acc"] for r in self.history)
        self.epoch += 1
        # The reported numbers are the test accuracy at the first epoch of best validation accuracy,
        # which is one where validation improved, and at the last epoch: the others may skip the test.
        needed = self.cfg.test_every_epoch or best_so_far or self.epoch == self.cfg.epochs
        test_loss, test_acc = test(key) if needed else (math.nan, math.nan)
        row = {
            "epoch": self.epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": seconds,
            "images_per_s": self.train_loader.num_images / max(seconds, 1e-9),
            "wall_seconds": time.perf_counter() - wall,  # with evaluation and the tricks' epoch hooks
        }
        self.history.append(row)
        self.wall_time += row["wall_seconds"]
        log.info("%s", self.progress_line(row))
        return row

    def progress_line(self, row: Mapping[str, float]) -> str:
        """One epoch's line: its numbers (`-` for a test split it skipped), the run's elapsed time, ETA.

        The ETA is the mean wall time of this process's epochs times the epochs left, evaluation and
        the tricks' hooks included; a resumed run counts the epochs since it resumed.
        """
        eta = self.eta()
        test = "-" if math.isnan(row["test_acc"]) else f"{row['test_acc']:.1f}%"
        return (
            f"{self.name} ep {self.epoch}/{self.cfg.epochs} loss {row['train_loss']:.3f} "
            f"acc {row['train_acc']:.1f}% val {row['val_acc']:.1f}% test {test} lr {row['lr']:.4f} "
            f"{row['seconds']:.2f}s {row['images_per_s']:.0f} img/s (wall {row['wall_seconds']:.2f}s; "
            f"elapsed {clock(self.wall_time)}, ETA {clock(eta)})"
        )

    def eta(self) -> float:
        """Seconds left: the mean wall time of this process's epochs so far times the epochs left."""
        done = len(self.history) - self.resumed_at
        return self.wall_time / max(done, 1) * (self.cfg.epochs - self.epoch)

    # -- resume --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue after this epoch: weights, optimizer, schedules, RNGs, history."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "history": [dict(r) for r in self.history],
            "train_time": self.train_time,
            "data_rng": self.train_loader.generator.get_state(),
            "rng": rng_state(),
            "mask": self.mask.tensors,
            "extra": self.extra,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a `state()` of this very run (the caller checked its identity)."""
        self.model.load_state_dict(state["model"])
        self.set_mask(Mask(state["mask"]))  # gradual pruning may have changed it since the start
        self.extra = dict(state["extra"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.history = [dict(r) for r in state["history"]]
        self.epoch, self.train_time = int(state["epoch"]), float(state["train_time"])
        self.train_loader.generator.set_state(state["data_rng"])
        set_rng_state(state["rng"])

    def fit(
        self,
        resume: ResumeDir | None = None,
        on_epoch_end: Callable[[Trainer], None] | None = None,
        discard: bool = True,
    ) -> FitResult:
        """Train for `cfg.epochs`, continuing from `resume` when it holds a state of this run.

        `on_epoch_end(trainer)` runs after every epoch; mask methods use it to snapshot weights (lottery
        ticket rewinding) or to prune gradually (`set_mask`); what they keep in `extra` survives a
        resume and comes back in `FitResult.extra`. With `discard=False` the resume file stays: a
        stage deletes it once its outputs are written, so a kill before that loses nothing.
        """
        state = resume.load(self.name) if resume is not None else None
        if state is not None:
            where = resume.path(self.name)
            check_state(state, where)
            try:
                self.load_state(state)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                raise CheckpointError(
                    f"{where}: a damaged resume file ({first_line(err)}); delete it"
                ) from None
            log.info("%s: resumed after epoch %d from %s", self.name, self.epoch, where)
            self.resumed_at = len(self.history)
            self._tricks_at(self.epoch - 1)
        every, stop = self.cfg.checkpoint_every, self.cfg.on_divergence == "stop"
        while self.epoch < self.cfg.epochs:
            good = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if stop else None
            try:
                self.run_epoch()
            except Diverged as err:
                if good is None:
                    raise
                self._stop(err, good)
                break
            if on_epoch_end is not None:
                on_epoch_end(self)
            due = self.epoch % every == 0 and self.epoch < self.cfg.epochs  # the last: `finish` follows
            if resume is not None and self.rt.rank == 0 and due:  # ranks hold the same state; one writes
                start = time.perf_counter()
                resume.save(self.name, self.state())
                self.checkpoint_time += time.perf_counter() - start
        self.release_graphs()
        result = self.finish()
        if resume is not None and self.rt.rank == 0 and discard:
            resume.discard(self.name)  # the finished checkpoint is now the artifact
        return result

    def _stop(self, err: Diverged, good: dict[str, Tensor]) -> None:
        """End the run with the last good epoch's network: a study's divergence is a result to record.

        At 99 % sparsity a trick can blow a network up (ghost skips, when the jumps go); failing would
        lose the experiment's other variants. The summary's numbers are then those of the epochs that
        finished, as the protocol reads them (the best validation epoch's test accuracy), and the
        record says where it diverged.
        """
        self.model.load_state_dict(good)
        self._tricks_at(self.epoch - 1)  # the tricks as they were in that epoch, for `finish`
        self.diverged = (err.epoch, err.step)
        log.warning("%s: loss became non-finite at epoch %d, step %d; stopped with epoch %d's network "
                    "(train.on_divergence: stop)", self.name, err.epoch, err.step, self.epoch)  # fmt: skip
        if not self.history:  # the first epoch diverged: the result is the network it started from
            self.history.append(self._untrained_row())
            return
        last = self.history[-1]
        if math.isnan(last["test_acc"]):  # test_every_epoch: false left the last good epoch untested
            last["test_loss"], last["test_acc"] = self.evaluations[1](self.graph_key())

    def _untrained_row(self) -> dict[str, float]:
        """Epoch 0: the starting network on every split, as a run that diverged in its first epoch ends.

        Without it such a cell would have no number, and a study would have to rerun or drop it;
        the training split is measured like the others (eval mode, no augmentation), since no
        epoch's running mean exists.
        """
        key, (val, test) = self.graph_key(), self.evaluations
        train_loss, train_acc = Evaluation(self.model, self.train_loader, self.rt, None)(key)
        (val_loss, val_acc), (test_loss, test_acc) = val(key), test(key)
        row = {"epoch": 0, "lr": self.opt.param_groups[0]["lr"], "train_loss": train_loss,
               "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss,
               "test_acc": test_acc, "seconds": 0.0, "images_per_s": 0.0, "wall_seconds": 0.0}  # fmt: skip
        log.info("%s", self.progress_line(row))
        return row

    def _tricks_at(self, epoch: int) -> None:
        """The tricks' state of `epoch` (their schedules are functions of the epoch alone).

        A resumed run sets it before anything else: if no epoch is left to run, `finish` then
        decides, as in the uninterrupted run, from the last epoch's values (blend back to ReLU or
        not, jumps removed or kept), not from the tricks' starting ones.
        """
        if epoch >= 0:
            for t in self.tricks:
                t.on_epoch_start(epoch, self.cfg.epochs, self.model)

    def release_graphs(self) -> None:
        """Free the captured graphs, their memory pools and static tensors now, not at the next `gc`.

        Each graph holds a bound method of its owner (a reference cycle), so a finished Trainer would
        otherwise live until the cycle collector runs, which may happen in the middle of a later
        capture in the same process (lottery tickets train several networks one after another).
        """
        for graph in (self.graph, *(e.graph for e in self.evaluations)):
            if graph is not None:
                graph.release()

    def step_path(self) -> str:
        """How the training steps ran: `captured` (CUDA graphs), `eager`, or eager after a failed capture."""
        if self.graph is None:
            return "eager"
        return f"eager (capture failed: {self.graph.failed})" if self.graph.failed else "captured"

    def finish(self) -> FitResult:
        """Run the tricks' `finish`, verify the mask on the final weights and summarise."""
        model = self.model
        if self._synced_bn:
            distributed.plain_batchnorm(self._synced_bn)
            self._synced_bn, self.forward = [], model
        for t in reversed(self.tricks):
            model = t.finish(model)
        if self.rt.world_size > 1:
            distributed.assert_same(model.state_dict(), self.rt.device, f"{self.name}: trained weights")
        weights = self._weights(model)
        if bad := self.mask.violations(weights):
            name, count = next(iter(bad.items()))
            raise MaskError(f"{self.name}: {count} pruned weights of {name} are not 0 after training")
        summary = summarize(
            self.history,
            sparsity=measured_stats(weights).sparsity,
            mask_sparsity=self.mask.stats().sparsity,
            images_per_epoch=self.train_loader.num_images,
            train_time=self.train_time,
            device=str(self.rt.device),
        )
        summary.update(
            weights_trained=self.weights_trained,
            weights_evaluated=count_weights(model, self.mask),
            wall_seconds=sum(r.get("wall_seconds", 0.0) for r in self.history),  # 0: older resume files
            checkpoint_seconds=self.checkpoint_time,
            step=self.step_path(),
        )
        for t in self.tricks:
            summary.update(t.metrics())
        if self.diverged is not None:
            summary.update(diverged_epoch=self.diverged[0], diverged_step=self.diverged[1])
            if self.history[-1]["epoch"] == 0:  # no epoch finished: nothing was trained, nothing timed
                summary.update(epochs=0, images_per_s=0.0)
        if any(not math.isfinite(v) for v in summary.values() if isinstance(v, float)):
            raise TrainingError(f"{self.name}: non-finite summary metrics: {summary}")
        return FitResult(model=model, history=self.history, summary=summary, mask=self.mask, extra=self.extra)
