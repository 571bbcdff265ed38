"""Activation statistics of a trained network: how many outputs of each nonlinearity are dead.

A forward hook on every activation module records, over a few test batches, the mean and std of its
outputs, the fraction that is exactly zero (dead ReLU outputs) and the fraction within `near_zero`
of zero (the original code's |a| ≤ 0.01 measure), plus a sample of values for a histogram.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from tost.runtime import Runtime

ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.SiLU, nn.Mish, nn.GELU, nn.ELU, nn.LeakyReLU)
SAMPLE_PER_LAYER = 20_000


@dataclass
class _Acc:
    count: int = 0
    total: float = 0.0
    sq: float = 0.0
    zeros: int = 0
    near: int = 0
    sample: list[Tensor] = field(default_factory=list)
    sampled: int = 0


def activation_sites(model: nn.Module) -> dict[str, nn.Module]:
    """Every activation module by name; the models build one per nonlinearity site."""
    return {n: m for n, m in model.named_modules() if isinstance(m, ACTIVATIONS) or _is_act(m)}


def _is_act(m: nn.Module) -> bool:
    return bool(getattr(m, "is_activation", False))


@torch.no_grad()
def activation_stats(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_batches: int,
    near_zero: float,
    rt: Runtime,
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Per-site statistics and a value sample per site, over the first `num_batches` batches."""
    model.eval()
    sites = activation_sites(model)
    accs = {n: _Acc() for n in sites}

    def hook_for(name: str):  # noqa: ANN202 - a forward hook
        def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            a, v = accs[name], out.detach().float().reshape(-1)
            a.count += v.numel()
            a.total += float(v.double().sum())
            a.sq += float((v.double() ** 2).sum())
            a.zeros += int((v == 0).sum())
            a.near += int((v.abs() <= near_zero).sum())
            room = SAMPLE_PER_LAYER - a.sampled
            if room > 0:
                a.sample.append(v[:room].cpu())
                a.sampled += min(room, v.numel())

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in sites.items()]
    try:
        for x, _y in itertools.islice(batches, num_batches):
            with rt.autocast():
                model(x)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for n, a in accs.items():
        mean = a.total / max(a.count, 1)
        var = max(a.sq / max(a.count, 1) - mean**2, 0.0)
        stats[n] = {
            "mean": mean,
            "std": var**0.5,
            "zero_fraction": a.zeros / max(a.count, 1),
            "near_zero_fraction": a.near / max(a.count, 1),
            "values": a.count,
        }
    samples = {n: torch.cat(a.sample) if a.sample else torch.zeros(0) for n, a in accs.items()}
    return stats, samples


def summary(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over sites of the exactly-zero and near-zero fractions: one number each per network."""
    zero = [s["zero_fraction"] for s in stats.values()]
    near = [s["near_zero_fraction"] for s in stats.values()]
    return {
        "mean_zero_fraction": sum(zero) / max(len(zero), 1),
        "mean_near_zero_fraction": sum(near) / max(len(near), 1),
    }


def plot_histograms(
    samples: dict[str, Tensor], stats: dict[str, dict[str, float]], bins: int, path: Path, title: str = ""
) -> None:
    """One small histogram per activation site, titled with its exactly-zero fraction.

    `title` names the run (variant, mask, sparsity): the PNG is shown alone, in `dvc plots show`
    among the other variants' and in a `dvc plots diff`, so it must say what it is. Five columns of
    1.8 inches at 100 dpi fit a page (900 pixels wide).

    The counts are computed with numpy and drawn as one step line each (`stairs`), with a fixed
    layout: drawing thousands of bar patches and `tight_layout` took ten seconds for a ResNet-20.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tost.io import atomic_path

    names = list(samples)
    cols = 5
    rows = max(1, -(-len(names) // cols))
    height = 1.75 * rows + 0.5  # inches: the titles and the axis labels get a fixed margin
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, height), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
        counts, edges = np.histogram(samples[name].numpy(), bins=bins)
        ax.stairs(np.maximum(counts, 0.5), edges, fill=True, color="#3b75af")  # 0.5: empty bins on a log axis
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)  # empty bins (drawn at 0.5) stay out of sight
        ax.set_title(f"{name}\nzero {100 * stats[name]['zero_fraction']:.1f}%", fontsize=7)
        ax.tick_params(labelsize=5)
        if i % cols == 0:
            ax.set_ylabel("count (log)", fontsize=6)
        if i + cols >= len(names):  # the lowest panel of its column
            ax.set_xlabel("activation value", fontsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    heading = f"{title}: activation values per site" if title else "activation values per site"
    fig.suptitle(heading, fontsize=8, y=1 - 0.06 / height)
    fig.subplots_adjust(
        left=0.07, right=0.99, bottom=0.45 / height, top=1 - 0.7 / height, hspace=0.85, wspace=0.3
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
