"""The captured step's plumbing, on the CPU: the SGD update, device-tensor schedules, capture and replay.

A CUDA graph records a function once and replays it with whatever its static input tensors hold. The
`Imitation` backend keeps that contract on the CPU (capture records without running; replay runs what
was recorded, reading the static inputs), so everything but the kernels is tested here: static
inputs refilled per step, device counters and sums, the shorter last batch run eagerly, and capture
again exactly when the model's structure changes. The runs are in float64, where the LR read from a
tensor (two roundings) and from a float (one) differ by ~1e-16 and cannot hide a wrong batch or step.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from tests.conftest import Imitation, random_mask, tiny_net, tiny_prepared
from tost import config
from tost.schedules import Window
from tost.step import sgd_step
from tost.train import Trainer
from tost.tricks import build_variant
from tost.tricks.label_smooth import alpha_at
from tost.tricks.soft_act import BlendAct


@pytest.mark.parametrize(("momentum", "nesterov", "wd", "dampening"), [
    (0.9, False, 5e-4, 0.0), (0.9, True, 5e-4, 0.0), (0.0, False, 1e-3, 0.0), (0.5, False, 0.0, 0.1),
])  # fmt: skip
def test_sgd_step_is_torchs_sgd_bit_for_bit_with_a_float_lr(momentum, nesterov, wd, dampening):
    torch.manual_seed(0)
    a = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(2))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    kw = dict(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd, dampening=dampening)
    ours, theirs = torch.optim.SGD(a, **kw), torch.optim.SGD(b, **kw)
    for step in range(5):
        grads = [torch.randn_like(p) for p in a]
        for params in (a, b):
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                p.grad = None if i == 2 and step >= 2 else g.clone()  # a parameter that stops training
        sgd_step(ours, 0.1 * 0.9**step)
        for group in theirs.param_groups:
            group["lr"] = 0.1 * 0.9**step
        theirs.step()
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True)), step
    assert all(torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])
               for p, q in zip(a[:2], b[:2], strict=True) if momentum)  # fmt: skip


def test_sgd_step_reads_the_lr_from_a_tensor_as_a_graph_does():
    torch.manual_seed(0)
    a = [nn.Parameter(torch.randn(6, dtype=torch.float64))]
    b = [nn.Parameter(a[0].detach().clone())]
    oa, ob = (torch.optim.SGD(x, lr=1.0, momentum=0.9, weight_decay=5e-4) for x in (a, b))
    lr = torch.tensor(0.05, dtype=torch.float64)
    for _ in range(3):
        g = torch.randn(6, dtype=torch.float64)
        a[0].grad, b[0].grad = g.clone(), g.clone()
        sgd_step(oa, 0.05)
        sgd_step(ob, lr)
    torch.testing.assert_close(a[0], b[0], rtol=1e-14, atol=0)


def _run(variant: str, graphs, epochs: int = 4, **train):
    p = config.parse({**_raw(), "train": {**_raw()["train"], "epochs": epochs, "batch_size": 28,
                                          "eval_batch_size": 10, "lr": 0.05, **train}})  # fmt: skip
    net = tiny_net().to(torch.get_default_dtype())
    tricks = build_variant(variant, p.tricks.options)
    trainer = Trainer(
        net, random_mask(net), tiny_prepared(), p.data, p.train, tricks, _rt(), 0, graphs=graphs
    )
    return trainer, trainer.fit()


def _raw():
    from tests.conftest import repo_params

    raw = repo_params()
    raw["tricks"]["lrsi"]["iters"] = 2
    return raw


def _rt():
    from tost.runtime import Runtime

    return Runtime.cpu()


@pytest.mark.parametrize("variant", ["baseline", "label_smooth", "ghost_skip", "tost"])
def test_replayed_steps_give_the_eager_result(float64, variant):
    """96 images in batches of 28: three replays and one eager short batch per epoch, val/test likewise."""
    imitation = Imitation()
    _, eager = _run(variant, None)
    graphed_trainer, graphed = _run(variant, imitation)
    for a, b in zip(eager.history, graphed.history, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-9), key
    for (name, p), q in zip(
        eager.model.state_dict().items(), graphed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)
    assert graphed_trainer.graph.captures == (2 if variant in ("ghost_skip", "tost") else 1)  # tost: one
    # recapture when both the jumps go and the ReLUs come back (the same epoch with the default windows)


def test_a_graph_is_captured_again_exactly_when_the_ghost_jumps_go(float64):
    imitation = Imitation()
    trainer, _ = _run("ghost_skip", imitation, epochs=10)
    # gate 1 until epoch 3, decaying through epoch 4 (still computed), skipped from epoch 5: one recapture
    assert trainer.graph.captures == 2
    assert [e.graph.captures for e in trainer.evaluations] == [2, 2]
    trainer, _ = _run("soft_act", Imitation(), epochs=10)  # λ moves in a buffer: no recapture for it ...
    assert trainer.graph.captures == 2  # ... until λ = 1 (epoch 5 of 10), when the ReLUs come back
    assert not any(isinstance(m, BlendAct) for m in trainer.model.modules())


def test_mask_held_and_counters_right_after_replays(float64):
    trainer, result = _run("baseline", Imitation(), epochs=2)
    assert (
        trainer.mask.violations(
            {n: p for n, p in result.model.named_parameters() if n in trainer.mask.tensors}
        )
        == {}
    )
    assert int(trainer.sums.step) == 4 and int(trainer.sums.bad_step) == -1  # 3 replays + 1 eager step


def test_the_device_tensor_schedules_hold_the_python_values():
    p = config.parse(_raw())
    net = tiny_net()
    tricks = build_variant("tost", p.tricks.options)
    trainer = Trainer(net, random_mask(net), tiny_prepared(), p.data,
                      dataclasses.replace(p.train, epochs=10, batch_size=32), tricks, _rt(), 0)  # fmt: skip
    smooth = next(t for t in tricks if type(t).__name__ == "LabelSmooth")
    assert p.train.schedule == "cosine"
    for epoch in range(10):
        trainer.run_epoch()
        assert trainer.lr.dtype == torch.float32  # the weights' dtype: foreach's fused path
        cosine = p.train.lr * 0.5 * (1 + math.cos(math.pi * epoch / 10))  # the epoch's LR, from its formula
        assert float(trainer.lr) == pytest.approx(cosine, rel=1e-6)  # the tensor the graph reads
        w_soft, w_ghost = Window(p.tricks.options["soft_act"].start, p.tricks.options["soft_act"].end), \
            Window(p.tricks.options["ghost_skip"].start, p.tricks.options["ghost_skip"].end)  # fmt: skip
        lams = {float(m.lam) for m in trainer.model.modules() if isinstance(m, BlendAct)}
        lam = w_soft.ramp(epoch, 10)  # at 1 the ReLUs are back: no blend is left to hold it
        assert lams == ({torch.tensor(lam, dtype=torch.float32).item()} if lam < 1 else set())
        if hasattr(trainer.model, "ghost_skip"):
            assert float(trainer.model.ghost_skip.gate) == pytest.approx(
                1.0 - w_ghost.ramp(epoch, 10), abs=1e-7
            )
        assert float(smooth.alpha) == alpha_at(epoch, 10, p.tricks.options["label_smooth"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["baseline", "tost"])
def test_cuda_graphs_match_eager_cuda_epoch_by_epoch_and_hold_the_mask(variant, raw_params):
    """fp32 (amp off), 100 training images in batches of 16: two warm-ups, a capture and three replays,
    then an eager short batch of 4, every epoch; val and test of 25 in batches of 8, so the evaluation
    graph is captured too. Per-epoch losses of the captured and the eager run agree within float
    tolerance (cuDNN's backward sums in any order), and the mask holds."""
    from tost.runtime import Runtime

    raw_params["train"].update(epochs=3, batch_size=16, eval_batch_size=8, lr=0.05, device="cuda", amp=False)
    raw_params["train"]["cudnn_benchmark"] = False
    raw_params["tricks"]["lrsi"]["iters"] = 2
    p = config.parse(raw_params)
    results, trainers = [], []
    for graphs in (False, True):
        net = tiny_net()
        mask = random_mask(net)
        rt = Runtime.from_config(dataclasses.replace(p.train, cuda_graphs=graphs))
        tricks = build_variant(variant, p.tricks.options)
        torch.manual_seed(0)
        trainer = Trainer(net, mask, tiny_prepared(n=100), p.data, p.train, tricks, rt, 0)
        res = trainer.fit()
        assert mask.violations({n: q for n, q in res.model.named_parameters() if n in mask.tensors}) == {}
        results.append(res)
        trainers.append(trainer)
    eager, graphed = results
    assert eager.summary["step"] == "eager" and graphed.summary["step"] == "captured"
    assert trainers[1].graph.captures >= 1 and all(e.graph.captures >= 1 for e in trainers[1].evaluations)
    for a, b in zip(eager.history, graphed.history, strict=True):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), (a["epoch"], key)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_resumes(raw_params, tmp_path):
    from tost.resume import ResumeDir
    from tost.runtime import Runtime

    raw_params["train"].update(epochs=3, batch_size=16, eval_batch_size=32, lr=0.05, device="cuda")
    p = config.parse(raw_params)
    rt = Runtime.from_config(p.train)
    assert rt.cuda_graphs
    resume = ResumeDir(tmp_path, "run")
    t = Trainer(tiny_net(), random_mask(tiny_net()), tiny_prepared(), p.data, p.train, [], rt, 0)
    t.run_epoch()
    resume.save(t.name, t.state())
    again = Trainer(tiny_net(), random_mask(tiny_net()), tiny_prepared(), p.data, p.train, [], rt, 0).fit(
        resume
    )
    assert [r["epoch"] for r in again.history] == [1, 2, 3] and again.history[0] == t.history[0]
    assert again.summary["final_test_acc"] > 25.0


def test_a_new_mask_mid_training_is_enforced_without_a_new_capture(float64):
    """Gradual pruning (gmp) changes the mask every epoch of its ramp: the new values go into the
    tensors the captured step holds, so nothing is captured again."""
    from tost.sparsity.mask import Mask

    p = config.parse(
        {**_raw(), "train": {**_raw()["train"], "epochs": 2, "batch_size": 28, "eval_batch_size": 10}}
    )
    net = tiny_net().to(torch.get_default_dtype())
    trainer = Trainer(
        net, random_mask(net), tiny_prepared(), p.data, p.train, [], _rt(), 0, graphs=Imitation()
    )
    trainer.run_epoch()
    sparser = random_mask(trainer.model, sparsity=0.9, seed=4)
    keep = {n: trainer.mask.tensors[n] & sparser.tensors[n] for n in trainer.mask.tensors}
    held = list(trainer.enforce.masks)
    trainer.set_mask(Mask(keep))
    trainer.run_epoch()
    assert trainer.graph.captures == 1
    assert all(a is b for a, b in zip(held, trainer.enforce.masks, strict=True))  # the graph's tensors
    weights = {n: p for n, p in trainer.model.named_parameters() if n in keep}
    assert trainer.mask.violations(weights) == {}
