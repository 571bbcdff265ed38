"""Several processes: torchrun + DDP (gloo on the CPU) gives the single-process result, rank 0 writes.

Equality needs both runs to see the same global batches with the same augmentation. Every rank draws
the seeded permutation and the crop offsets of the whole global batch from the same generator and
keeps every second image (`DeviceLoader.set_shard`), BN uses global-batch statistics
(`SyncBatchNorm2d`), and each rank's loss is weighted by its share of the batch. Random crops stay
on (digits' `crop_padding: 1`), so augmentation is part of what is compared.

The equivalence itself is checked in float64. In float32 one step agrees to ~1e-6, but these tiny
sparse nets are chaotic: in a single process alone a 1e-6 nudge of the init grows to ~1e-2 in the
weights within ten SGD steps, so float32 rounding differences (sums split over two ranks) cannot be
told apart from a real bug there. In float64 they stay far below the tolerance. The float32 launch
through the stage (torchrun, two gloo workers) checks everything else: artifacts from rank 0 only,
one progress line per epoch, the mask, no ghosts left.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn

from stages import _torchrun as torchrun_glue
from stages import train as train_stage
from stages._common import run_stage
from tests.conftest import one_error_line, repo_params
from tost import config, data, distributed
from tost.data import Prepared, Split
from tost.datasets.split import prepare
from tost.errors import ConfigError, TrainingError
from tost.io import load_tensors, save_tensors
from tost.loader import DeviceLoader
from tost.models import build
from tost.runtime import Runtime, seed_everything
from tost.sparsity.mask import Mask, prunable
from tost.train import FitResult, Trainer
from tost.tricks import build_variant

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 64 * 4 + 1  # the last batch holds one image: rank 1's shard of it is empty
N_EVAL = 129  # likewise for the last evaluation batch
VARIANT = "tost"  # all four tricks: GradInit, ghost skips (switched off in epoch 2), soft act, smoothing


def _params(raw: dict, nproc: int) -> dict:
    raw["model"]["width"] = 4
    raw["train"].update(epochs=2, batch_size=64, eval_batch_size=128, lr=0.05, device="cpu", nproc=nproc)
    raw["tricks"]["run"] = ["baseline", VARIANT]
    raw["tricks"]["lrsi"]["iters"] = 4
    return raw


def _digits(seed: int) -> Prepared:
    """A few hundred of scikit-learn's digits."""
    cfg = dataclasses.replace(config.parse(repo_params()).data, val_fraction=0.2)
    full = prepare(cfg, seed)

    def head(s: Split, n: int) -> Split:
        return Split(s.x[:n].clone(), s.y[:n].clone())

    return Prepared(
        train=head(full.train, N_TRAIN), val=head(full.val, N_EVAL), test=head(full.test, N_EVAL),
        num_classes=full.num_classes, mean=full.mean, std=full.std,
    )  # fmt: skip


def _net_and_mask(p: config.Params, prepared: Prepared) -> tuple[torch.nn.Module, Mask]:
    torch.manual_seed(0)
    net = build(p.model.arch, prepared.num_classes, prepared.shape, p.model.width)
    g = torch.Generator().manual_seed(0)
    return net, Mask({n: torch.rand(w.shape, generator=g) >= 0.8 for n, w in prunable(net).items()})


def _fit(p: config.Params, prepared: Prepared, rt: Runtime) -> FitResult:
    """What the train stage does, minus the files."""
    net, mask = _net_and_mask(p, prepared)
    seed_everything(p.seed)
    tricks = build_variant(VARIANT, p.tricks.options)
    return Trainer(net, mask, prepared, p.data, p.train, tricks, rt, p.seed, name=VARIANT).fit()


def _rank_main(rank: int, world: int, port: int, raw: dict, prepared: Prepared, out: Path) -> None:
    """One spawned rank: join the gloo group as torchrun's workers do, train in float64, rank 0 saves."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    p = config.parse(raw)
    with distributed.process_group(Runtime.cpu(), distributed.Launch(rank, rank, world, world)) as rt:
        result = _fit(p, prepared, rt)
        if rt.rank == 0:
            save_tensors(out, {"state_dict": result.model.state_dict(), "summary": result.summary,
                               "history": result.history})  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_in_float64(tmp_path, raw_params):
    raw = _params(raw_params, 2)
    prepared = _digits(config.parse(raw).seed)
    out = tmp_path / "ddp.pt"
    mp.spawn(_rank_main, args=(2, _free_port(), raw, prepared, out), nprocs=2, join=True)

    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        single = _fit(config.parse(_params(raw_params, 1)), prepared, Runtime.cpu())
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)

    ddp = load_tensors(out)
    a, b = ddp["state_dict"], single.model.state_dict()
    assert a.keys() == b.keys()
    assert a["conv1.weight"].dtype == torch.float64
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-7, atol=1e-9, msg=k)
    for ra, rb in zip(ddp["history"], single.history, strict=True):
        for key in ("train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-7), key
    for key in ("sparsity", "test_acc", "final_test_acc", "best_epoch", "lrsi_scale_mean"):
        assert ddp["summary"][key] == pytest.approx(single.summary[key], rel=1e-7), key


def _artifacts(tmp: Path, raw: dict) -> Path:
    """The data, init and mask files the stage reads."""
    p = config.parse(_params(raw, 1))
    prepared = _digits(p.seed)
    art = tmp / "artifacts"
    data.save_prepared(prepared, art / "data")
    net, mask = _net_and_mask(p, prepared)
    save_tensors(art / "init.pt", {"state_dict": net.state_dict()})
    mask.save(art / "mask.pt")
    return art


def _argv(variant: str, art: Path, out: Path) -> list[str]:
    return [
        variant, "--data", str(art / "data"), "--mask", str(art / "mask.pt"), "--init", str(art / "init.pt"),
        "--ckpt", str(out / "ckpt.pt"), "--metrics", str(out / "metrics.json"),
        "--detail", str(out / "detail.json"),
        "--curve", str(out / "curve.csv"), "--resume", str(out / "resume"),
    ]  # fmt: skip


# Loaded by every process of the launch (PYTHONPATH): each one notes that it started and logs each file
# it renames into place, which is how tost.io writes every file, so the test sees which rank wrote what.
SPY = """
import os
_log = os.path.join(os.environ["TOST_SPY"], "rank" + os.environ.get("RANK", "-"))
open(_log + ".started", "w").close()
_replace = os.replace
def _logged(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(_log + ".writes", "a") as f:
        f.write(os.path.basename(os.fspath(dst)) + "\\n")
os.replace = _logged
"""


def test_stage_relaunches_under_torchrun_and_rank0_writes(tmp_path, raw_params):
    art = _artifacts(tmp_path, raw_params)
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(_params(raw_params, 2)))
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SPY)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    env.update(PYTHONPATH=f"{spy}{os.pathsep}{ROOT}", TOST_SPY=str(spy))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train", *_argv(VARIANT, art, work / "out")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = sorted(f.name for f in spy.glob("*.started"))
    assert started == ["rank-.started", "rank0.started", "rank1.started"]  # the launcher and both ranks
    assert not (spy / "rank-.writes").exists() and not (spy / "rank1.writes").exists()
    written = (spy / "rank0.writes").read_text().split()
    assert {"ckpt.pt", "metrics.json", "detail.json", "curve.csv"} <= set(written), written
    assert proc.stdout.count(f"train[{VARIANT}] ep ") == 2, proc.stdout  # one progress line per epoch
    assert sorted(f.name for f in (work / "out").iterdir()) == [
        "ckpt.pt",
        "curve.csv",
        "detail.json",
        "metrics.json",
    ]
    state = load_tensors(work / "out" / "ckpt.pt")["state_dict"]
    assert state.keys() == build("resnet20", 10, (1, 8, 8), 4).state_dict().keys()  # ghosts removed
    mask, _ = Mask.load(art / "mask.pt")
    for name, keep in mask.tensors.items():
        assert not state[name][~keep].any(), f"{name}: a pruned weight is not exactly 0"
    metrics = json.loads((work / "out" / "detail.json").read_text())
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert metrics["epochs"] == 2 and metrics["lrsi_iters"] == 4
    assert all(r == r for r in (metrics["final_train_loss"], metrics["test_acc"]))  # finite, not NaN


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_more_processes_than_gpus_is_one_line(tmp_path, monkeypatch, capsys, raw_params, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainingError, match=r"train.nproc=2 but only 1 CUDA GPU\(s\) are visible"):
        Runtime.from_config(
            config.parse({**raw_params, "train": {**raw_params["train"], "device": device}}).train, nproc=2
        )

    raw_params = _params(raw_params, 2)
    raw_params["train"]["device"] = device
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchrun_glue, "relaunch", lambda *a: pytest.fail("torchrun must not start"))
    for var in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    argv = _argv("baseline", tmp_path, tmp_path / "out")  # never read: the error comes first
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda: train_stage.main(argv))
    line = one_error_line(exit_info.value.code, capsys.readouterr().err)
    assert line.startswith("error: train.nproc=2 but only 1 CUDA GPU(s) are visible")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("nproc", "match"), [(0, "train.nproc must be >= 1"), (3, "train.nproc=3 must divide")]
)
def test_nproc_is_validated(raw_params, nproc, match):
    raw_params["train"].update(nproc=nproc, batch_size=64)
    with pytest.raises(ConfigError, match=match):
        config.parse(raw_params)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_together_are_the_single_process_batches(world):
    g = torch.Generator().manual_seed(1)
    split = Split(torch.randint(0, 256, (37, 1, 6, 6), generator=g, dtype=torch.uint8), torch.arange(37))

    def loader(rank: int) -> DeviceLoader:
        out = DeviceLoader(
            split, (0.5,), (0.25,), 8, torch.device("cpu"), train=True, crop_padding=2, flip=True, seed=3
        )
        if rank >= 0:
            out.set_shard(rank, world)
        return out

    whole, shards = loader(-1), [loader(r) for r in range(world)]
    for _ in range(2):  # the second epoch checks that the generators stayed in step
        ranks = [list(s) for s in shards]
        for step, (x, y) in enumerate(whole):
            assert whole.global_batch_size(step) == len(y)
            for r in range(world):
                xs, ys = ranks[r][step]
                assert torch.equal(xs, x[r::world]) and torch.equal(ys, y[r::world])
    assert [len(ranks[r][-1][1]) for r in range(world)] == {2: [3, 2], 3: [2, 2, 1]}[world]  # uneven


class _NewDDP:
    def __init__(self, module, device_ids=None, broadcast_buffers=True, forward_sync_buffers=True): ...


class _OldDDP:  # torch 2.11's signature: no forward_sync_buffers
    def __init__(self, module, device_ids=None, broadcast_buffers=True, static_graph=False): ...


@pytest.mark.parametrize(("ddp", "kwargs"), [
    (_NewDDP, {"forward_sync_buffers": False}),
    (_OldDDP, {"broadcast_buffers": False}),
])  # fmt: skip
def test_the_buffer_sync_keyword_is_one_the_installed_torch_accepts(ddp, kwargs):
    assert distributed.no_buffer_sync(ddp) == kwargs
    ddp(nn.Linear(1, 1), **distributed.no_buffer_sync(ddp))  # no TypeError


def test_a_capture_backend_with_several_processes_is_refused(raw_params):
    from tests.conftest import random_mask, tiny_net, tiny_prepared
    from tests.test_step import Imitation

    p = config.parse(raw_params)
    rt = dataclasses.replace(Runtime.from_config(p.train), world_size=2, rank=0)
    with pytest.raises(TrainingError, match="captured step runs in one process only, not 2"):
        Trainer(tiny_net(), random_mask(tiny_net()), tiny_prepared(), p.data, p.train, [], rt, 0,
                graphs=Imitation())  # fmt: skip
