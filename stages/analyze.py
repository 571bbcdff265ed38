"""DVC stage `analyze@<variant>`: activation statistics of the trained network on test batches."""

import argparse
from pathlib import Path

from stages._common import PARAMS, build_model, load_weights, run_stage
from tost import analysis, config, data
from tost.io import load_tensors, write_json
from tost.loader import DeviceLoader
from tost.runtime import Runtime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    for name in ("data", "ckpt", "metrics", "plot"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = Runtime.detect(p.train.device, p.train.amp, False, False)
    prepared = data.load_prepared(args.data)
    model = build_model(p, prepared.num_classes, prepared.shape)
    load_weights(model, load_tensors(args.ckpt), args.ckpt, p)
    model.to(rt.device)
    loader = DeviceLoader(prepared.test, prepared.mean, prepared.std, p.train.eval_batch_size, rt.device,
                          train=False)  # fmt: skip
    stats, samples = analysis.activation_stats(model, loader, p.analysis.batches, p.analysis.near_zero, rt)
    zero = [s["zero_fraction"] for s in stats.values()]
    near = [s["near_zero_fraction"] for s in stats.values()]
    write_json(
        args.metrics,
        {
            "variant": args.variant,
            "mean_zero_fraction": sum(zero) / max(len(zero), 1),
            "mean_near_zero_fraction": sum(near) / max(len(near), 1),
            "layers": stats,
        },
    )
    analysis.plot_histograms(samples, stats, p.analysis.bins, args.plot)


if __name__ == "__main__":
    run_stage(main)
