"""Training metrics: accumulated on the device, read once per logging interval; written as JSON lines and a plot.

A step's metrics are 0-dim tensors; `MetricAccumulator.add` folds them into a running weighted sum with two small
kernels and no host sync. Only `compute` copies to the host (and, under DDP, sums across ranks first).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from zoo_core.artifacts import atomic_path, atomic_write_text


class MetricAccumulator:
    """Weighted running means of named scalar metrics, kept on `device`."""

    def __init__(self, names: Sequence[str], device: torch.device | str) -> None:
        self.names = tuple(names)
        self.sums = torch.zeros(len(self.names), device=device)
        self.weight = 0

    def reset(self) -> None:
        self.sums.zero_()
        self.weight = 0

    def add(self, values: Mapping[str, Tensor], weight: int) -> None:
        """Add one batch's metrics (means over the batch), weighted by `weight` (its examples or tokens)."""
        self.sums.add_(torch.stack([values[n].detach().float() for n in self.names]), alpha=weight)
        self.weight += weight

    def compute(self, all_reduce: Callable[[Tensor], None] | None = None) -> dict[str, float]:
        """The means so far (one host sync); `all_reduce` sums the totals across processes first."""
        totals = torch.cat([self.sums, self.sums.new_tensor([float(self.weight)])])
        if all_reduce is not None:
            all_reduce(totals)
        *sums, weight = totals.tolist()
        return {n: (s / weight if weight else float("nan")) for n, s in zip(self.names, sums)}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.detach().cpu(), "weight": self.weight}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.weight = int(state["weight"])


def write_jsonl(path: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> None:
    """Write `records` as JSON lines, atomically (the whole file each time: it is a few lines)."""
    atomic_write_text(path, "".join(json.dumps(dict(r)) + "\n" for r in records))


def plot_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Plot per-epoch metrics: losses on the left, other metrics (accuracy, perplexity ...) on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    keys = [k for k in records[0] if k.startswith(("train_", "val_"))] if records else []
    losses = [k for k in keys if k.endswith("loss")]
    others = [k for k in keys if k not in losses]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 5, 3.5), squeeze=False)
    for ax, group in zip(axes[0], [losses, others]):
        for key in group:
            ax.plot(epochs, [r.get(key) for r in records], marker="o" if len(epochs) < 20 else None,
                    linestyle="--" if key.startswith("val_") else "-", label=key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
