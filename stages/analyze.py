"""DVC stage `analyze@<variant>`: activation statistics of the trained network on test batches."""

import argparse
from pathlib import Path

from stages._common import PARAMS, run_stage
from stages._device import runtime
from tost import analysis, config, data, metrics, models, tricks
from tost.loader import eval_loaders


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    for name in ("data", "ckpt", "metrics", "detail", "plot"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = runtime(p.train, layout=False)
    prepared = data.load_prepared(args.data)
    rebuild = lambda m, obj: tricks.restore(m, obj.get("kept", {}))  # noqa: E731 - tricks left in the network
    model = models.from_file(args.ckpt, p.model, prepared.num_classes, prepared.shape, rebuild).to(rt.device)
    _, test = eval_loaders(prepared, p.train.eval_batch_size, rt)
    stats, samples = analysis.activation_stats(model, test, p.analysis.batches, p.analysis.near_zero, rt)
    record = {"variant": args.variant, **analysis.summary(stats), "layers": stats}
    metrics.write(record, metrics.ANALYSIS, args.metrics, args.detail)
    title = f"{args.variant}, {p.prune.method} mask at {p.prune.sparsity:g}, {p.model.arch} w{p.model.width}"
    analysis.plot_histograms(samples, stats, p.analysis.bins, args.plot, title)


if __name__ == "__main__":
    run_stage(main)
