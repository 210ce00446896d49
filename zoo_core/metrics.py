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
    """Weighted running means of named scalar metrics, kept on `device`.

    A batch's weight may be an int or a 0-dim tensor (the non-padding tokens of a translation batch): either way the
    running total stays on the device, so adding never waits for the device.
    """

    def __init__(self, names: Sequence[str], device: torch.device | str) -> None:
        self.names = tuple(names)
        # the sums, then the total weight, in one tensor: one copy to the host in compute(). float64: an epoch of a
        # language model adds up millions of tokens (MPS has no float64)
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.totals = torch.zeros(len(self.names) + 1, dtype=dtype, device=device)

    @property
    def weight(self) -> float:
        """The total weight so far (a host sync)."""
        return float(self.totals[-1])

    def reset(self) -> None:
        self.totals.zero_()

    def add(self, values: Mapping[str, Tensor], weight: int | Tensor) -> None:
        """Add one batch's metrics (means over the batch), weighted by `weight` (its examples or tokens)."""
        dtype = self.totals.dtype
        row = torch.stack([*(values[n].detach().to(dtype) for n in self.names), self.totals.new_ones(())])
        if isinstance(weight, Tensor):
            self.totals.add_(row * weight.to(dtype))
        else:  # a Python number: no tensor made from it (on CUDA that copy would wait for the device)
            self.totals.add_(row, alpha=weight)

    def compute(self, all_reduce: Callable[[Tensor], None] | None = None) -> dict[str, float]:
        """The means so far (one host sync); `all_reduce` sums the totals across processes first."""
        totals = self.totals.clone()
        if all_reduce is not None:
            all_reduce(totals)
        *sums, weight = totals.tolist()
        return {n: (s / weight if weight else float("nan")) for n, s in zip(self.names, sums)}

    def total_weight(self, all_reduce: Callable[[Tensor], None] | None = None) -> float:
        """The total weight (examples or tokens) so far, over all processes with `all_reduce`."""
        total = self.totals[-1:].clone()
        if all_reduce is not None:
            all_reduce(total)
        return float(total.item())

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "totals" in state:
            self.totals.copy_(state["totals"])
        else:  # checkpoints written before the weight moved onto the device
            self.totals.copy_(torch.cat([state["sums"].to(self.totals.dtype),
                                         torch.tensor([float(state["weight"])], dtype=self.totals.dtype)]))


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
