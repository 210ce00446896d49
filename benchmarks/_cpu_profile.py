"""CPU-time measurements of training steps that both sides of a comparison run: the zoo in this process, the book's
code in the d2l-reference tool's virtual environment.

Only the standard library and torch are imported (torch inside the functions), because the reference's scripts run in
that environment and import this module from this folder: one copy of the clocks keeps the two sides timed alike.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator


GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::addmv_",
                      "aten::mv", "aten::addmv"})  # the matrix products, whose FLOPs FlopCounterMode counts


def timed_steps(batches: Iterator[Any], step: Callable[[Any, Callable[[], None]], int]) -> list[list[float]]:
    """The CPU time (process time) of every step over `batches`: getting the batch, then each phase of
    ``step(batch, mark)``, which calls ``mark()`` at the end of each phase and returns the step's weight (its target
    tokens; counted after the last mark, so untimed). One row a step: the phases' seconds, then the weight."""
    clock, steps, marks = time.process_time, [], []

    def mark() -> None:
        marks.append(clock())

    while True:
        marks.clear()
        mark()
        try:
            batch = next(batches)
        except StopIteration:
            return steps
        mark()
        weight = step(batch, mark)
        steps.append([b - a for a, b in zip(marks, marks[1:])] + [weight])


def epoch_profile(epoch: Callable[[], None], steps: int, cpu_epochs: int) -> dict[str, Any]:
    """Where an epoch of `steps` training steps spends its time, after one warm-up epoch: CPU time per step over
    `cpu_epochs` epochs (process time, which a busy machine's time-slicing does not inflate as it does wall time), the
    FLOPs of one epoch (FlopCounterMode), and, per step, the operators taking the most self CPU time in one epoch
    (torch.profiler), the self CPU time of the matrix products (`GEMM_OPS`) and the number of operator calls."""
    from torch.profiler import profile
    from torch.utils.flop_counter import FlopCounterMode

    epoch()
    cpu = time.process_time()
    for _ in range(cpu_epochs):
        epoch()
    cpu_ms = (time.process_time() - cpu) / cpu_epochs / steps * 1e3
    with FlopCounterMode(display=False) as fc:
        epoch()
    with profile() as p:
        epoch()
    ops = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    gemm = sum(e.self_cpu_time_total for e in ops if e.key in GEMM_OPS)
    return {"gflop_per_epoch": round(fc.get_total_flops() / 1e9, 2), "steps": steps,
            "cpu_ms_per_step": round(cpu_ms, 1), "self_cpu_ms_per_step": round(total / 1e3 / steps, 1),
            "gemm_self_cpu_ms_per_step": round(gemm / 1e3 / steps, 1),
            "op_calls_per_step": round(sum(e.count for e in ops) / steps),
            "top_ops_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 1) for e in ops[:10]}}
