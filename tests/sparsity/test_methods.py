"""Property tests that fail when a mask method computes the wrong thing, and the mask stage per method."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.func import functional_call

from tests.conftest import repo_params, same_tensors
from tests.sparsity.contexts import find, make_ctx
from tost import config, data
from tost.datasets.split import prepare
from tost.errors import CheckpointError, MaskError, TostError
from tost.io import load_tensors
from tost.models import build
from tost.sparsity.mask import Mask, prunable
from tost.sparsity.methods import METHODS, gmp, grasp, lt, snip, synflow, taylor


def _recording_train(ctx):
    """`ctx` whose train function keeps every FitResult and the weights each run started from."""
    results, starts, real = [], [], ctx.train

    def train(net, mask, epochs, name, on_epoch_end=None):
        starts.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        results.append(real(net, mask, epochs, name, on_epoch_end))
        return results[-1]

    return dataclasses.replace(ctx, train=train), results, starts


def _fixed_batches(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def _hand_gradient(net, names, batches):
    """Σ_b ∇L_b by one autograd.grad of the summed loss (independent of .backward accumulation)."""
    net.train()
    weights = prunable(net)
    loss = sum(F.cross_entropy(net(x), y) for x, y in batches)
    return dict(zip(names, torch.autograd.grad(loss, [weights[n] for n in names]), strict=True))


# -- magnitude / taylor / gmp / lt ------------------------------------------------------------------
def test_magnitude_keeps_exactly_the_largest_weights_of_the_dense_network():
    ctx = make_ctx(sparsity=0.7)
    mask = find("magnitude", ctx).mask
    trained = prunable(ctx.trained)
    assert not torch.equal(trained["conv1.weight"], ctx.model.state_dict()["conv1.weight"])  # it trained
    kept = torch.cat([w.detach().abs()[mask.tensors[n]] for n, w in trained.items() if n in mask.tensors])
    pruned = torch.cat([w.detach().abs()[~mask.tensors[n]] for n, w in trained.items() if n in mask.tensors])
    assert kept.min() >= pruned.max()


def test_taylor_scores_the_trained_network_and_is_snip_without_dense_training():
    same = [find(m, make_ctx(dense_epochs=0)).mask for m in ("taylor", "snip")]
    assert _same_mask(*same)  # at dense.epochs 0 the scored network is the init
    trained = [find(m, make_ctx(dense_epochs=2)).mask for m in ("taylor", "snip")]
    assert not _same_mask(*trained)  # TP is no second SNIP
    assert _same_mask(trained[1], same[1])  # SNIP never looks at the dense network
    ctx = make_ctx(dense_epochs=2)
    scored = dataclasses.replace(ctx, model=ctx.trained)  # TP = the Taylor score of the trained network
    assert _same_mask(trained[0], METHODS["snip"].find_mask(scored, None).mask)


def _same_mask(a, b) -> bool:
    return same_tensors(a.tensors, b.tensors)


def test_gmp_cubic_schedule():
    s = gmp.cubic_sparsity
    assert s(0, 2, 8, 0.9) == 0.0
    assert s(2, 2, 8, 0.9) == 0.0
    assert s(5, 2, 8, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))
    assert s(8, 2, 8, 0.9) == 0.9
    assert s(10, 2, 8, 0.9) == 0.9
    assert s(3, 3, 3, 0.5) == 0.5  # start == end: one step
    values = [s(t, 2, 8, 0.9) for t in range(11)]
    assert values == sorted(values)
    assert s(5, 2, 8, 0.9, initial=0.3) == pytest.approx(0.9 + (0.3 - 0.9) * 0.5**3)


def test_gmp_prunes_during_training_and_ends_exact():
    ctx, results, _ = _recording_train(make_ctx(sparsity=0.75, dense_epochs=3))
    pruned = find("gmp", ctx)
    mask = pruned.mask
    total = mask.stats().total
    assert total - mask.stats().kept == round(0.75 * total)
    assert mask.violations(prunable(results[0].model)) == {}  # the trained net already obeys it
    per_epoch = pruned.info["gmp_sparsity_per_epoch"]
    assert len(per_epoch) == 3
    assert per_epoch == sorted(per_epoch)
    assert 0 < per_epoch[0] < 0.75


@pytest.mark.parametrize("rewind_epoch", [0, 1])
def test_lt_rewinds_and_nests(rewind_epoch):
    ctx, results, starts = _recording_train(make_ctx(sparsity=0.8, rounds=3))
    pruned = METHODS["lt"].find_mask(ctx, lt.Options(rewind_epoch=rewind_epoch))
    mask = pruned.mask
    init = ctx.model.state_dict()
    if rewind_epoch == 0:  # round 1 is the dense stage's network: only rounds 2 and 3 train here
        assert len(results) == 2 and pruned.rewind is None
        expected = init
        assert pruned.info["lt_rounds"][0]["network"] == "dense stage"
    else:  # round 1 trains again for its snapshot after one epoch, as a one-epoch run gives it
        assert len(results) == 3
        assert all(torch.equal(starts[0][k], init[k]) for k in init)  # the dense run starts at the init
        assert all(
            torch.equal(v, ctx.trained.state_dict()[k]) for k, v in results[0].model.state_dict().items()
        )
        one = make_ctx()
        dense_run = one.train(copy.deepcopy(one.model), Mask.ones(one.weights()), 1, "check")
        expected = pruned.rewind
        assert all(torch.equal(v, dense_run.model.state_dict()[k]) for k, v in expected.items())
        assert not torch.equal(expected["conv1.weight"], init["conv1.weight"])
        starts = starts[1:]
    for start in starts:  # every later round starts from the rewind point
        assert all(torch.equal(start[k], expected[k]) for k in init)
    rounds = pruned.info["lt_rounds"]
    assert [r["sparsity"] for r in rounds] == sorted(r["sparsity"] for r in rounds)
    assert rounds[0]["sparsity"] == 0.0
    assert mask.stats().total - mask.stats().kept == round(0.8 * mask.stats().total)


def test_lt_rewind_after_the_dense_run_is_an_error():
    with pytest.raises(TostError, match="rewind_epoch"):
        make_ctx(dense_epochs=1, **{"prune.lt.rewind_epoch": 2})


@pytest.mark.parametrize("method", ["gmp", "lt"])
def test_methods_that_train_need_dense_epochs(method):
    with pytest.raises(TostError, match=rf"prune.method={method} trains .* set dense.epochs >= 1"):
        make_ctx(dense_epochs=0, **{"prune.method": method})


# -- gradient scorers ----------------------------------------------------------------------------------
def test_taylor_score_equals_the_hand_computed_one_and_snip_uses_it():
    batches = _fixed_batches()
    ctx = dataclasses.replace(make_ctx(), batches=lambda: iter(batches))
    names = list(ctx.weights())
    g = _hand_gradient(copy.deepcopy(ctx.model), names, batches)
    expected = {n: (g[n] * ctx.weights()[n].detach()).abs() for n in names}
    got = taylor.score(ctx, copy.deepcopy(ctx.model), None)
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-9)
    assert snip.METHOD.score is taylor.score and snip.METHOD.network == "init"
    assert taylor.METHOD.network == "trained"


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1, bias=False),
        nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4, bias=False),
    )  # fmt: skip


def test_grasp_score_is_w_times_hessian_gradient_product():
    net = _tiny_net().double()
    batches = [(x.double(), y) for x, y in _fixed_batches(3)]
    ctx = dataclasses.replace(
        make_ctx(model=net, dense_epochs=0, **{"prune.include_last": True}), batches=lambda: iter(batches)
    )
    t = 200.0
    weights = ctx.weights()
    names, w0 = list(weights), tuple(w.detach() for w in weights.values())

    def loss(*ws):
        params = dict(zip(names, ws, strict=True))
        return sum(F.cross_entropy(functional_call(net, params, (x,)) / t, y) for x, y in batches)

    g = torch.autograd.grad(loss(*(ws := [w.clone().requires_grad_() for w in w0])), ws)
    _, hg = torch.autograd.functional.hvp(loss, w0, tuple(g))
    got = grasp.score(ctx, copy.deepcopy(net), grasp.Options(temperature=t))
    for n, w, h in zip(names, w0, hg, strict=True):
        torch.testing.assert_close(got[n], w * h, rtol=1e-6, atol=1e-18)
    assert any(bool((s < 0).any()) for s in got.values())  # signed, not |.|
    mask = METHODS["grasp"].find_mask(ctx, grasp.Options(temperature=t)).mask
    kept = torch.cat([got[n][mask.tensors[n]] for n in names])
    pruned = torch.cat([got[n][~mask.tensors[n]] for n in names])
    assert kept.min() >= pruned.max()  # the highest w ⊙ Hg survive


# -- synflow -------------------------------------------------------------------------------------------
def test_synflow_reads_no_data():
    def refuse():
        raise AssertionError("synflow called batches()")

    ctx = dataclasses.replace(make_ctx(), batches=refuse)
    mask = METHODS["synflow"].find_mask(ctx, synflow.Options(iters=3)).mask
    assert mask.stats().sparsity == pytest.approx(0.8, abs=1e-3)


def test_synflow_scores_are_invariant_to_rescaling_between_layers():
    net = _tiny_net().double()  # so that x3 and /3 are (nearly) exact
    lin = synflow.linearised(net)
    weights = prunable(lin, include_last=True)
    before = {n: s.clone() for n, s in synflow.synflow_scores(lin, weights, (1, 8, 8)).items()}
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.div_(3.0)
    lin = synflow.linearised(net)
    after = synflow.synflow_scores(lin, prunable(lin, include_last=True), (1, 8, 8))
    for n in before:
        torch.testing.assert_close(after[n], before[n], rtol=1e-10, atol=0)
    assert len(torch.unique(before["0.weight"])) > 1  # not trivially constant


def test_synflow_schedule_is_exponential_and_ends_at_target():
    s = synflow.density_schedule(0.9, 4)
    assert s[-1] == 0.9
    kept = [1 - x for x in s]
    assert kept[0] == pytest.approx(0.1**0.25)
    assert kept[2] == pytest.approx(0.1**0.75)


# -- file ----------------------------------------------------------------------------------------------
def _random_mask(ctx, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(w.shape, generator=g) > 0.6 for n, w in ctx.weights().items()})


def _import(ctx, path):
    ctx = dataclasses.replace(ctx, prune=dataclasses.replace(ctx.prune, path=str(path)))
    return METHODS["file"].find_mask(ctx, None)


def test_file_round_trips_every_accepted_format(tmp_path):
    ctx = make_ctx()
    mask = _random_mask(ctx)
    mask.save(tmp_path / "tost.pt")
    torch.save({n: t.float() for n, t in mask.tensors.items()}, tmp_path / "plain.pt")
    torch.save({f"{n}_mask": t.float() for n, t in mask.tensors.items()}, tmp_path / "upstream.pt")
    state = copy.deepcopy(ctx.model).state_dict()
    for n, m in mask.tensors.items():
        state[n] = state[n] * m
    torch.save(state, tmp_path / "sd.pt")
    torch.save({"epoch": 0, "state_dict": state, "best_acc": 0.0}, tmp_path / "pruned.pth.tar")
    torch.save({"format": "tost-checkpoint/1", "state_dict": state}, tmp_path / "ckpt.pt")
    for f in ("tost.pt", "plain.pt", "upstream.pt", "sd.pt", "pruned.pth.tar", "ckpt.pt"):
        got = _import(ctx, tmp_path / f)
        assert same_tensors(got.mask.tensors, mask.tensors), f
    assert got.info["source_kind"] == "checkpoint"


def test_file_errors_are_one_line(tmp_path):
    ctx = make_ctx()
    tensors = {n: t.float() for n, t in _random_mask(ctx).tensors.items()}
    first = next(iter(tensors))
    other = build("vgg16", 4, (1, 8, 8), 4)
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != first}, MaskError, "missing"),
        "extra": ({**tensors, "fc.weight": torch.ones(4, 16)}, MaskError, "unknown"),
        "shape": ({**tensors, first: torch.ones(2, 2)}, MaskError, "shape"),
        "binary": ({**tensors, first: tensors[first] * 0.5}, MaskError, "neither 0 nor 1"),
        "arch": ({n: torch.ones_like(w) for n, w in prunable(other).items()}, MaskError, "architecture"),
        "ckpt_arch": ({"state_dict": build("resnet32", 4, (1, 8, 8), 4).state_dict()}, MaskError, "fit"),
        "tensor": (torch.ones(3), MaskError, "not a mask"),
    }
    for name, (obj, err, match) in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with pytest.raises(err, match=match) as info:
            _import(ctx, tmp_path / f"{name}.pt")
        assert "\n" not in str(info.value), name
    with pytest.raises(CheckpointError, match="not found"):
        _import(ctx, tmp_path / "nope.pt")


# -- the dense and mask stages, for real, once per method ---------------------------------------------------
@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    """Digits, cut to 256 training images so that the dense runs take well under a second."""
    full = prepare(config.parse(repo_params()).data, 0)
    cut = data.Split(full.train.x[:256], full.train.y[:256])
    small = data.Prepared(cut, full.val, full.test, full.num_classes, full.mean, full.std)
    out = tmp_path_factory.mktemp("data")
    data.save_prepared(small, out)
    return out


@pytest.mark.parametrize("method", [*sorted(METHODS), "lt-rewind"])
def test_mask_stage_runs_every_method(method, stage_data, tmp_path, monkeypatch):
    from stages import dense as dense_stage
    from stages import mask as mask_stage

    raw = repo_params()
    raw["model"]["width"] = 4
    raw["train"].update(epochs=1, batch_size=128, device="cpu")
    raw["dense"]["epochs"] = 1
    raw["prune"].update(method=method.split("-")[0], batches=2, batch_size=64, sparsity=0.5)
    raw["prune"]["synflow"]["iters"] = 5
    raw["prune"]["lt"]["rewind_epoch"] = int(method == "lt-rewind")
    if method == "file":
        torch.manual_seed(raw["seed"])
        net = build("resnet20", 10, (1, 8, 8), 4)
        _random_mask(make_ctx(model=net)).save(tmp_path / "given.pt")
        raw["prune"]["path"] = str(tmp_path / "given.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    dense_stage.main(["--data", str(stage_data), "--out", "dense", "--metrics", "dense.json",
                      "--detail", "dense-detail.json"])  # fmt: skip
    assert json.loads(Path("dense-detail.json").read_text())["epochs"] == 1
    out = {k: tmp_path / f"{k}.pt" for k in ("mask", "init")}
    mask_stage.main(["--data", str(stage_data), "--dense", "dense", "--mask", str(out["mask"]),
                     "--init", str(out["init"]), "--metrics", str(tmp_path / "mask.json"),
                     "--detail", str(tmp_path / "mask-detail.json")])  # fmt: skip
    metrics = json.loads((tmp_path / "mask-detail.json").read_text())
    headline = json.loads((tmp_path / "mask.json").read_text())
    assert headline == {"method": metrics["method"], "requested_sparsity": 0.5,
                        "sparsity": metrics["sparsity"], "empty_layers": 0}  # fmt: skip
    assert metrics["size_per_layer"].keys() == metrics["kept_per_layer"].keys()
    assert sum(metrics["size_per_layer"].values()) == metrics["total"]
    _, meta = Mask.load(out["mask"])
    assert meta["method"] == method.split("-")[0]
    assert metrics["empty_layers"] == [] and sum(metrics["kept_per_layer"].values()) == metrics["kept"]
    if method != "file":
        assert metrics["total"] - metrics["kept"] == round(0.5 * metrics["total"])
    init = load_tensors(out["init"])["state_dict"]
    torch.manual_seed(raw["seed"])
    fresh = build("resnet20", 10, (1, 8, 8), 4).state_dict()
    assert torch.equal(init["conv1.weight"], fresh["conv1.weight"]) == (method != "lt-rewind")


def test_a_long_mask_search_says_where_it_is(monkeypatch, caplog):
    """GraSP and SynFlow print progress with elapsed time and an ETA (at most every few seconds)."""
    from tost.sparsity.methods import base

    ticks = iter(range(0, 1000, 3))
    progress = base.Progress("grasp", 4, clock=lambda: float(next(ticks)))
    with caplog.at_level("INFO"):
        for i in range(1, 5):
            progress.step(i, "batches")
    lines = [r.message for r in caplog.records]
    assert lines == [
        "grasp: 2/4 batches, 6s, ETA 6s",
        "grasp: 4/4 batches, 12s, ETA 0s",
    ]  # every 5 s, the last


@pytest.mark.parametrize("name", ["grasp", "synflow"])
def test_grasp_and_synflow_report_their_progress(name, monkeypatch, caplog):
    from tost.sparsity.methods import base

    monkeypatch.setattr(base, "PROGRESS_EVERY", 0.0)
    with caplog.at_level("INFO"):
        find(name, make_ctx())
    lines = [r.message for r in caplog.records if r.message.startswith(f"{name}: ")]
    assert len(lines) >= 2 and lines[-1].split(",")[-1].strip() == "ETA 0s", lines
