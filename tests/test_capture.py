"""What a CUDA graph capture of the training step relies on, checked on the CPU where no graph exists.

A graph replays the aten ops it recorded with the tensors and Python numbers it recorded. So the step
must dispatch the same ops, with the same scalar arguments, on the same persistent storages whatever
the epoch's schedule values (they live in device tensors), and must never read a tensor on the host.
A `TorchDispatchMode` records every op `Trainer._graph_step` dispatches at two epochs of the `tost`
variant that share a graph key; the two recordings must be identical and free of host syncs. The
recorder is checked against a step that bakes one schedule value in as a Python float.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from stages._device import set_cudnn_benchmark
from tests.conftest import Imitation, random_mask, repo_params, tiny_net, tiny_prepared, variant_trainer
from tost import config
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.train import Trainer
from tost.tricks import soft_act as soft_act_module

SYNCS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item"}  # ops that read to the host


class Recorder(TorchDispatchMode):
    """Every aten op: its name, its Python scalar arguments, and which persistent storages it touches."""

    def __init__(self, persistent: dict[int, str]) -> None:
        super().__init__()
        self.persistent = persistent
        self.ops: list[tuple[str, tuple, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves = tree_leaves((args, kwargs or {}))
        scalars = tuple(
            x for x in leaves if isinstance(x, bool | int | float) and not isinstance(x, torch.Tensor)
        )
        storages = tuple(
            self.persistent.get(x.untyped_storage().data_ptr(), "temporary")
            for x in leaves
            if isinstance(x, torch.Tensor)
        )
        self.ops.append((str(func), scalars, storages))
        return func(*args, **(kwargs or {}))


def _tensors(obj: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            yield f"{prefix}.{name}", value
        elif isinstance(value, list):
            yield from (
                (f"{prefix}.{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, torch.Tensor)
            )


def persistent_storages(trainer: Trainer) -> dict[int, str]:
    """Storage address -> name of everything that outlives a step: what a graph may hold on to."""
    named = [*trainer.model.named_parameters(), *trainer.model.named_buffers()]
    named += [(f"momentum:{i}", s["momentum_buffer"]) for i, s in enumerate(trainer.opt.state.values())]
    named += [("lr", trainer.lr), *_tensors(trainer.sums, "sums"), *_tensors(trainer.enforce, "enforce")]
    named += [*_tensors(trainer.train_loader, "loader")]
    for i, trick in enumerate(trainer.tricks):
        named += list(_tensors(trick, f"trick{i}"))
    return {t.untyped_storage().data_ptr(): name for name, t in named}


def record_step(trainer: Trainer, epoch: int, lr: float) -> tuple[object, list]:
    """The schedules of `epoch`, one warm step (momentum buffers exist after it), then one recorded step."""
    for t in trainer.tricks:
        t.on_epoch_start(epoch, trainer.cfg.epochs, trainer.model)
    trainer.model.train()
    trainer.lr.fill_(lr)
    idx, draws = next(iter(trainer.train_loader.plan()))
    trainer._graph_step(idx, *draws)
    with Recorder(persistent_storages(trainer)) as rec:
        trainer._graph_step(idx, *draws)
    return trainer.graph_key(), rec.ops


def tost_trainer(epochs: int = 20) -> Trainer:
    return variant_trainer(
        "tost", epochs=epochs, batch_size=16, eval_batch_size=32, lr=0.05, max_grad_norm=1.0
    )


def schedule_values(trainer: Trainer) -> tuple[float, ...]:
    lam = next(m.lam for m in trainer.model.modules() if isinstance(m, soft_act_module.BlendAct))
    gate = trainer.model.ghost_skip.gate
    alpha = next(t.alpha for t in trainer.tricks if hasattr(t, "alpha"))
    return float(lam), float(gate), float(alpha), float(trainer.lr)


def test_the_step_is_the_same_ops_on_the_same_storages_whatever_the_schedules():
    trainer = tost_trainer()
    key7, ops7 = record_step(trainer, 7, 0.05)  # 20 epochs, windows 0.3-0.5: λ 0.25, gate 0.75
    values7 = schedule_values(trainer)
    key8, ops8 = record_step(trainer, 8, 0.0123)  # λ 0.5, gate 0.5, another α and LR
    values8 = schedule_values(trainer)
    assert key7 == key8 and all(a != b for a, b in zip(values7, values8, strict=True))
    assert len(ops7) > 100
    assert ops7 == ops8  # names, Python scalars, persistent storages: what a replay would reuse
    assert not {name for name, _, _ in ops7 if name.split(".")[1] in SYNCS}


def test_the_recorder_sees_a_schedule_baked_in_as_a_python_float(monkeypatch):
    def baked(self, x):  # the mutation: λ read on the host and frozen into the step
        lam = float(self.lam)
        return (1 - lam) * F.silu(x) + lam * F.relu(x)

    monkeypatch.setattr(soft_act_module.BlendAct, "forward", baked)
    trainer = tost_trainer()
    _, ops7 = record_step(trainer, 7, 0.05)
    _, ops8 = record_step(trainer, 8, 0.05)
    assert ops7 != ops8
    assert {name for name, _, _ in ops7 if name.split(".")[1] in SYNCS} == {
        "aten._local_scalar_dense.default"
    }


class FailingCapture(Imitation):
    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def _train(graphs, **train):
    raw = repo_params()
    raw["train"].update(epochs=3, batch_size=28, eval_batch_size=10, lr=0.05, **train)
    p = config.parse(raw)
    net = tiny_net()
    trainer = Trainer(
        net, random_mask(net), tiny_prepared(), p.data, p.train, [], Runtime.cpu(), 0, graphs=graphs
    )
    return trainer, trainer.fit()


@pytest.mark.usefixtures("float64")
def test_a_failed_capture_goes_on_eagerly_with_the_same_result_and_says_so(caplog):
    _, eager = _train(None)
    _, fell_back = _train(FailingCapture())
    for a, b in zip(eager.history, fell_back.history, strict=True):  # warm-ups read the LR tensor
        for key in ("train_loss", "val_loss", "test_loss", "val_acc", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-9), key
    for name, w in eager.model.state_dict().items():
        torch.testing.assert_close(w, fell_back.model.state_dict()[name], rtol=1e-9, atol=1e-12, msg=name)
    assert eager.summary["step"] == "eager"
    assert fell_back.summary["step"] == (
        "eager (capture failed: RuntimeError: operation not permitted when stream is capturing)"
    )
    failed = [r.message for r in caplog.records if "capturing the step as a CUDA graph failed" in r.message]
    assert len(failed) == 3  # training, validation and test steps: once each, then eager


def test_a_finished_trainer_is_freed_without_the_cycle_collector():
    trainer, result = _train(Imitation())
    assert trainer.graph.captures == 1 and trainer.graph.replay is None and trainer.graph.static == []
    ref = weakref.ref(trainer)
    gc.disable()
    try:
        del trainer
        assert ref() is None  # no reference cycle kept it (and its graphs, pools, buffers) alive
    finally:
        gc.enable()
    assert result.summary["step"] == "captured"


@pytest.mark.parametrize("every", [1, 2, 5])
def test_resume_files_every_n_epochs_and_never_after_the_last(tmp_path, monkeypatch, every):
    saved = []
    monkeypatch.setattr(ResumeDir, "save", lambda self, name, state: saved.append(state["epoch"]))
    raw = repo_params()
    raw["train"].update(epochs=5, batch_size=32, checkpoint_every=every)
    p = config.parse(raw)
    net = tiny_net()
    Trainer(net, random_mask(net), tiny_prepared(), p.data, p.train, [], Runtime.cpu(), 0).fit(
        ResumeDir(tmp_path, "run")
    )
    assert saved == [e for e in range(1, 5) if e % every == 0]


@pytest.mark.parametrize("flag", [True, False])
def test_cudnn_benchmark_is_set_on_cuda_only(monkeypatch, flag):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not flag)  # restored after the test
    cfg = dataclasses.replace(config.parse(repo_params()).train, cudnn_benchmark=flag)
    set_cudnn_benchmark(cfg, Runtime.cpu())
    assert torch.backends.cudnn.benchmark is (not flag)  # the CPU leaves it alone
    set_cudnn_benchmark(cfg, dataclasses.replace(Runtime.cpu(), device=torch.device("cuda", 0)))
    assert torch.backends.cudnn.benchmark is flag
