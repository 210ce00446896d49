"""Matrix-product timings on CPU and GPU (d2l §6.7, exercises 1 and 3); ``zoo bench matmul`` prints them.

1. Large against small products: a GPU wins on large ones and can lose on small ones, where launching the work
   costs more than doing it.
2. 1000 products of 100x100 matrices, logging each one's Frobenius norm: read back one at a time (``.item()``, a
   host-device synchronisation per product) or kept on the device and read once at the end.

GPU work is asynchronous: every timing ends with a synchronisation, or it would time the launches only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Seconds per call of `fn`, averaged over `repeat` calls after one warm-up call, synchronised."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeat


def matmul_timing(size: int, device: torch.device, repeat: int, seed: int = 0) -> dict[str, float]:
    """Seconds per ``(size x size) @ (size x size)`` product on `device`, and the GFLOP/s (2 size^3 flops) it gives."""
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(size, size, generator=g).to(device), torch.randn(size, size, generator=g).to(device)
    seconds = timed(lambda: A @ B, device, repeat)
    return {"size": size, "repeat": repeat, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}


def norm_logging(products: int, size: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """`products` products ``A @ B_i`` of ``size x size`` matrices, each one's Frobenius norm logged two ways.

    ``item_each``: ``.item()`` after each product (a synchronisation per product); ``once_at_end``: norms stacked on
    the device and read back once. Both log the same numbers (``max_abs_diff`` between the two logs).
    """
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(size, size, generator=g).to(device)
    Bs = torch.randn(products, size, size, generator=g).to(device)

    def item_each() -> list[float]:
        return [torch.linalg.matrix_norm(A @ Bs[i]).item() for i in range(products)]

    def once_at_end() -> list[float]:
        return torch.stack([torch.linalg.matrix_norm(A @ Bs[i]) for i in range(products)]).tolist()

    once_at_end()  # warm-up (kernels, allocator)
    start = time.perf_counter()
    log_each = item_each()  # .item() synchronises: nothing left in flight
    item_s = time.perf_counter() - start
    start = time.perf_counter()
    log_once = once_at_end()  # .tolist() synchronises once
    once_s = time.perf_counter() - start
    return {"products": products, "size": size, "item_each_s": item_s, "once_at_end_s": once_s,
            "max_abs_diff": max(abs(a - b) for a, b in zip(log_each, log_once))}


def matmul_benchmark(devices: Sequence[str | torch.device] = ("cpu",), large: int = 1024, small: int = 16,
                     large_repeat: int = 5, small_repeat: int = 1000, products: int = 1000,
                     product_size: int = 100) -> list[dict[str, Any]]:
    """The timings for each device: ``large`` and ``small`` products (`matmul_timing`) and the norm logging
    (`norm_logging`), as one dict per device."""
    results = []
    for device in devices:
        device = torch.device(device)
        results.append({
            "device": str(device),
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "large": matmul_timing(large, device, large_repeat),
            "small": matmul_timing(small, device, small_repeat),
            "norms": norm_logging(products, product_size, device),
        })
    return results


def _duration(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def format_table(results: list[dict[str, Any]]) -> list[str]:
    """The results as the lines of a table (what ``zoo bench matmul`` prints)."""
    rows = [["DEVICE", "TEST", "SIZE", "TIME", "GFLOP/S"]]
    for r in results:
        large, small, norms = r["large"], r["small"], r["norms"]
        rows += [
            [r["device"], "large matmul (per product)", str(large["size"]), _duration(large["seconds"]),
             f"{large['gflops']:.3g}"],
            [r["device"], "small matmul (per product)", str(small["size"]), _duration(small["seconds"]),
             f"{small['gflops']:.3g}"],
            [r["device"], f"{norms['products']} norms, .item() each", str(norms["size"]),
             _duration(norms["item_each_s"]), "-"],
            [r["device"], f"{norms['products']} norms, read once at end", str(norms["size"]),
             _duration(norms["once_at_end_s"]), "-"],
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


__all__ = ["format_table", "matmul_benchmark", "matmul_timing", "norm_logging", "synchronize", "timed"]
