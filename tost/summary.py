"""What a finished training run reports: its headline numbers and the weights it used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from tost.sparsity.mask import Mask


def count_weights(model: nn.Module, mask: Mask) -> int:
    """Conv and linear weights that may be non-zero: kept ones of masked layers, all of the others.

    Counted on the network as it trains (with any ghost jumps) and as it is evaluated, so a variant
    that adds dense weights says how many it used; biases and BatchNorm are not counted.
    """
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            key = f"{name}.weight" if name else "weight"
            total += int(mask.tensors[key].sum()) if key in mask.tensors else m.weight.numel()
    return total


def summarize(
    history: Sequence[dict[str, float]],
    *,
    sparsity: float,
    mask_sparsity: float,
    images_per_epoch: int,
    train_time: float,
    device: str,
) -> dict[str, Any]:
    """The run's headline numbers: test accuracy at the best validation epoch (ties: the earliest).

    That epoch and the last always have a test accuracy (`train.test_every_epoch: false` tests only
    epochs that improve validation, and the last).
    """
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    last = history[-1]
    return {
        "test_acc": best["test_acc"],
        "final_test_acc": last["test_acc"],
        "best_val_acc": best["val_acc"],
        "best_epoch": int(best["epoch"]),
        "final_val_acc": last["val_acc"],
        "final_train_loss": last["train_loss"],
        "sparsity": sparsity,
        "mask_sparsity": mask_sparsity,
        "epochs": len(history),
        "train_seconds": train_time,
        "images_per_s": images_per_epoch * len(history) / max(train_time, 1e-9),
        "device": device,
    }
