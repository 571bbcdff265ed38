"""Stand-ins shared by the sweep tests: a recording `dvc`, `dvc exp show` output, counted plot colours."""

from __future__ import annotations

import json

import numpy as np


class FakeDvc:
    """Records `dvc` calls and answers `queue status` from a script of successive tables."""

    def __init__(self, statuses: list[dict[str, str]], workers: list[int] | None = None):
        self.calls: list[list[str]] = []
        self.statuses = statuses
        self.workers = workers or [1]  # per `queue status`, the last one repeated

    def __call__(self, args):
        self.calls.append(list(args))
        if list(args[:2]) == ["queue", "status"]:
            now = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            up = self.workers.pop(0) if len(self.workers) > 1 else self.workers[0]
            rows = [f"{i:07x}  {n}  04:01 PM   {s}" for i, (n, s) in enumerate(now.items())]
            return (
                "Task     Name    Created    Status\n"
                + "\n".join(rows)
                + f"\n\nWorker status: {up} active, 0 idle\n"
            )
        return ""


def exp_show(entries: list[dict]) -> str:
    """`dvc exp show --json` in the shape DVC 3 prints: workspace, then the baseline commit with its exps."""

    def rev(name, params, metrics):
        return {
            "rev": name + "sha",
            "name": name,
            "error": None,
            "experiments": None,
            "data": {
                "rev": name + "sha",
                "params": {"params.yaml": {"data": params}},
                "metrics": {k: {"data": v} for k, v in metrics.items()},
            },
        }

    exps = [
        {
            "name": e["name"],
            "executor": e.get("executor"),
            "revs": [rev(e["name"], e["params"], e["metrics"])],
        }
        for e in entries
    ]
    return json.dumps(
        [
            {"rev": "workspace", "name": None, "error": None, "experiments": None, "data": {}},
            {"rev": "abc", "name": "main", "error": None, "experiments": exps, "data": {}},
        ]
    )


def metrics_for(variants, acc):
    return {
        f"metrics/train/{v}.json": {"test_acc": acc + i, "final_test_acc": 0.0}
        for i, v in enumerate(variants)
    }


def pixels(image: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.06) -> int:
    """How many pixels of a decoded PNG have this colour."""
    return int((np.abs(image - np.array(rgb)).max(axis=-1) < tol).sum())
