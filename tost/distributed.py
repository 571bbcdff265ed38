"""Several processes, one training run: DDP under torchrun that matches one process with the same batch.

`train.nproc > 1` makes the train stage relaunch itself under `torchrun` (the stage glue does that,
`stages._common.relaunch`); every rank then runs this module's pieces around the one training loop:

- **the same data**: every rank draws the same seeded permutation and the same augmentation for the
  whole global batch, and keeps every `world_size`-th image of it (see `DeviceLoader.set_shard`);
- **the same batch statistics**: every BatchNorm is switched to `SyncBatchNorm2d`, whose training
  statistics are those of the global batch, so the forward pass is the single-process one;
- **the same gradient**: each rank's loss is weighted by its share of the global batch before DDP
  averages the gradients, so uneven last batches give the global mean too;
- **the same mask and weights**: checked across ranks at the start and at the end (`assert_same`).

Only the process group is global state (torch.distributed keeps it); everything else is passed in.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import _functional_collectives as funcol  # differentiable, traceable by compile
from torch.nn.parallel import DistributedDataParallel

from tost.errors import TostError, TrainingError
from tost.runtime import Runtime


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch (read from torchrun's environment variables)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The torchrun placement of this process, or None when it was not started by torchrun."""
    env = os.environ if environ is None else environ
    if "LOCAL_RANK" not in env or "WORLD_SIZE" not in env:
        return None
    local_rank, world = int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"])
    return Launch(
        rank=int(env.get("RANK", local_rank)),
        local_rank=local_rank,
        world_size=world,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


@contextlib.contextmanager
def process_group(rt: Runtime, launch: Launch | None) -> Iterator[Runtime]:
    """Join the process group of `launch` (NCCL on CUDA, gloo on the CPU) and yield this rank's runtime.

    Without a launch, or with a world of one, nothing is initialised and `rt` is yielded unchanged,
    so the single-process path is exactly what it was.
    """
    if launch is None or launch.world_size == 1:
        yield rt
        return
    if rt.device.type == "cuda":
        torch.cuda.set_device(launch.local_rank)
        device = torch.device("cuda", launch.local_rank)
        dist.init_process_group("nccl", rank=launch.rank, world_size=launch.world_size, device_id=device)
    else:
        device = rt.device
        dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world_size)
    try:
        yield replace(rt, device=device, rank=launch.rank, world_size=launch.world_size)
    finally:
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one rank of several (a process group of more than one is up)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, over all ranks.

    torch's `nn.SyncBatchNorm` refuses CPU tensors, so gloo runs (and the tests) could not use it.
    Each rank computes its shard's count, mean and sum of squared deviations (stable `var_mean`), one
    differentiable all-reduce gathers them, and Chan's formula combines them exactly: the forward pass
    is the single-process one up to float rounding, and the all-reduce's backward carries every rank's
    share of the statistics' gradient. A rank with an empty shard contributes zeros. Evaluation, and
    a single process, use the plain BatchNorm2d path.
    """

    def forward(self, x: Tensor) -> Tensor:
        batch_stats = self.training or self.running_mean is None
        if not (batch_stats and active()):
            return super().forward(x)
        world, rank = dist.get_world_size(), dist.get_rank()
        c = x.shape[1]
        n_local = x.numel() // c
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in float32 at least
        if n_local:
            var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0)
            m2 = var * n_local
        else:  # zeros that still depend on x, so this rank joins the backward all-reduce like the others
            mean = m2 = xf.sum(dim=(0, 2, 3))
        local = torch.stack([xf.new_full((c,), float(n_local)), mean, m2])
        slots = torch.cat([local.new_zeros(rank, 3, c), local[None], local.new_zeros(world - rank - 1, 3, c)])
        gathered = funcol.all_reduce(slots, "sum", dist.group.WORLD)
        counts, means, m2s = gathered.unbind(1)
        total = counts.sum(0)
        g_mean = (counts * means).sum(0) / total
        g_m2 = m2s.sum(0) + (counts * (means - g_mean).square()).sum(0)
        g_var = g_m2 / total
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_running(g_mean.detach(), g_m2.detach(), total.detach())
        scale = torch.rsqrt(g_var + self.eps)
        shift = -g_mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, m2: Tensor, total: Tensor) -> None:
        """What `F.batch_norm` does: momentum (or cumulative) average, unbiased variance."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = m2 / (total - 1).clamp_min(1)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def sync_batchnorm(model: nn.Module) -> list[nn.Module]:
    """Turn every plain BatchNorm2d into a `SyncBatchNorm2d` in place; returns those changed.

    The class of each module is switched rather than the module replaced, so parameters, buffers,
    forward hooks (ghost skips attach to BNs) and state_dict keys all stay exactly as they are.
    """
    changed = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for m in changed:
        m.__class__ = SyncBatchNorm2d
    return changed


def plain_batchnorm(modules: Sequence[nn.Module]) -> None:
    """Undo `sync_batchnorm`: the trained network is the plain architecture again."""
    for m in modules:
        if type(m) is SyncBatchNorm2d:
            m.__class__ = nn.BatchNorm2d


def no_buffer_sync(ddp: Callable[..., nn.Module] = DistributedDataParallel) -> dict[str, bool]:
    """The DDP keyword that turns off the buffer broadcast before every forward, for this torch.

    Every rank holds the same BatchNorm buffers (SyncBatchNorm keeps them equal), so the broadcast is
    wasted work. Recent torch names the switch `forward_sync_buffers`; older releases (2.11, common on
    GPU nodes) only know `broadcast_buffers` and raise a TypeError on the new name.
    """
    params = inspect.signature(ddp.__init__).parameters
    return (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )


def wrap(model: nn.Module, rt: Runtime) -> nn.Module:
    """What a training step calls: the model, inside DDP when several ranks train, compiled if asked.

    DDP registers the parameters that require gradients when it is built, so the trainer builds it
    again whenever that set changes (ghost skips freeze their jumps once the gate reaches 0).
    """
    net: nn.Module = model
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids, **no_buffer_sync())
    return torch.compile(net) if rt.compile else net


def shard_objective(
    loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y: Tensor, world: int, global_n: int
) -> tuple[Tensor, Tensor]:
    """This rank's mean loss, and the objective whose DDP-averaged gradient is the global batch's.

    DDP divides the sum of the ranks' gradients by the world size; weighting each rank's mean loss
    by n_rank · world / n_global makes that the gradient of the global batch's mean loss even when
    the shards differ in size (a short last batch). An empty shard still runs a backward pass
    (DDP and the BN all-reduces need every rank), with a zero objective.
    """
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    n = y.numel()
    if n == 0:
        zero = wide.sum() * 0.0
        return zero.detach(), zero
    loss = loss_fn(wide, y)
    weight = n * world / global_n
    return loss, loss if weight == 1.0 else loss * weight


def all_sum(values: Tensor) -> Tensor:
    """Sum over ranks (in place, returned): per-epoch metric accumulators."""
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_min(values: Tensor) -> Tensor:
    """Minimum over ranks (in place, returned)."""
    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return values


def assert_same(
    tensors: Mapping[str, Tensor], device: torch.device, what: str, error: type[TostError] = TrainingError
) -> None:
    """Raise on every rank unless each tensor is bit-identical to rank 0's.

    Rank 0's copy is broadcast and compared, and the verdict is agreed on, so all ranks stop together
    with the same one-line error instead of hanging in the next collective.
    """
    first_bad = len(tensors)
    for i, t in enumerate(tensors.values()):
        mine = t.detach().to(device).contiguous()
        if mine.dtype == torch.bool:
            mine = mine.to(torch.uint8)
        ref = mine.clone()
        dist.broadcast(ref, src=0)
        if first_bad == len(tensors) and not torch.equal(ref, mine):
            first_bad = i
    bad = int(all_min(torch.tensor(first_bad, device=device)))
    if bad < len(tensors):
        name = list(tensors)[bad]
        raise error(f"{what}: {name} differs between ranks; every rank must load the same files and params")
