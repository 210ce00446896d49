"""How much of a training step at 3x the reference's speed the matrix products alone would take, for the translation
models: the GEMM floor of the zoo's step against a third of the book's step.

    ZOO_DATA=../shared/data python benchmarks/roofline.py [--models seq2seq,bahdanau,transformer] [--threads 1] \
        [--reference ../shared/tools/d2l-reference] [--out benchmarks/results/roofline_cpu.json]

Everything is measured in this run, on this machine, at ``--threads`` torch threads on both sides:

- ``peak_gflops``: this CPU's single-precision matrix product rate, the best of square products of 256 to 2048 (the
  best of five timings each): no GEMM of the step can run faster.
- the zoo's training step (book preset, the batches the Trainer draws, its CPU settings: freed memory kept, subnormals
  flushed), through `_cpu_profile.epoch_profile`: FLOPs a step (FlopCounterMode counts the matrix products; the
  packed CPU losses skip the products whose results the loss never reads, such as the padding's position-wise work,
  except in the attention's small batched products, a few percent of the FLOPs), CPU ms a step, the self CPU ms of
  its matrix products and its operator calls (torch.profiler). So the floor below is what the book's computation
  itself needs from the matrix unit, not an artefact of the zoo's implementation.
- the reference: ``d2l-reference MODEL --epochs N --seed 0`` with ``OMP_NUM_THREADS`` = threads; its ms a step is its
  training seconds over its steps, the measure its target tokens/s (the 3x target's denominator) comes from.
- the verdict, per model: ``budget_ms`` (the reference's step / 3), ``gemm_floor_ms`` (FLOPs / peak) and its share of
  the budget, and ``rest_allowed_ms``: what the budget leaves for everything that is not a matrix product (the
  operator calls, the elementwise passes, Adam, the Python), with the products running as fast as they do in the zoo
  now. ``rest_now_ms`` is what that rest takes today.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _common import write_result
from _cpu_profile import epoch_profile
from _translation import DEFAULT_REFERENCE, reference_run
import zoo_core
from zoo_core.devices import flush_denormals, keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("seq2seq", "bahdanau", "transformer")
CPU_EPOCHS = 5  # epochs timed in CPU time per model, after one warm-up epoch
TARGET_RATIO = 3.0


def peak_gflops(sizes: tuple[int, ...] = (256, 512, 1024, 2048), timings: int = 5) -> dict[str, float]:
    """The best single-precision GEMM rate (GFLOP/s) of square products, per size, at the current thread count."""
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        reps = max(1, int(1e9 / (2 * n ** 3)))  # about a GFLOP a timing
        a @ b
        best = float("inf")
        for _ in range(timings):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = min(best, (time.perf_counter() - t) / reps)
        rates[str(n)] = round(2 * n ** 3 / best / 1e9, 1)
    return rates


def zoo_step(name: str, data) -> dict:
    """The zoo's training step on the book's training batches, as the Trainer runs it (`training_step`, backward,
    clipping to norm 1, the optimizer), profiled by `epoch_profile`."""
    torch.manual_seed(0)
    model = zoo_core.get_model(name, preset="book").train()
    opt = model.configure_optimizers()
    params = [p for p in model.parameters() if p.requires_grad]
    loader = data.train_dataloader().replace(seed=0)
    batches = list(loader.iterate(0))

    def epoch() -> None:
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            model.training_step(batch)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1)
            opt.step()

    keep_freed_memory()
    with flush_denormals():
        return epoch_profile(epoch, len(batches), CPU_EPOCHS)


def verdict(zoo: dict, reference: dict, peak: float) -> dict:
    """The step budget at 3x the reference and what the matrix products leave of it (module docstring)."""
    ref_ms = reference["train_seconds"] * 1e3 / (reference["epochs"] * reference["train_batches_per_epoch"])
    budget = ref_ms / TARGET_RATIO
    gflop = zoo["gflop_per_epoch"] / zoo["steps"]
    floor = gflop / peak * 1e3
    gemm_now = zoo["gemm_self_cpu_ms_per_step"]
    return {"reference_ms_per_step": round(ref_ms, 1), "budget_ms": round(budget, 1),
            "zoo_gflop_per_step": round(gflop, 3), "gemm_floor_ms": round(floor, 1),
            "gemm_floor_share_of_budget": round(floor / budget, 2),
            "zoo_cpu_ms_per_step": zoo["cpu_ms_per_step"], "zoo_gemm_ms_per_step": gemm_now,
            "zoo_gemm_gflops": round(gflop / gemm_now * 1e3, 1),
            "rest_now_ms": round(zoo["cpu_ms_per_step"] - gemm_now, 1),
            "rest_allowed_ms": round(budget - gemm_now, 1),
            "zoo_op_calls_per_step": zoo["op_calls_per_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--epochs", type=int, default=30, help="the reference's epochs (the book's: 30)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "roofline_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = peak_gflops()
    peak = max(peaks.values())
    result: dict = {"benchmark": "translation models: the GEMM floor of the zoo's CPU training step against the step "
                                 "budget at 3x the d2l reference (see benchmarks/roofline.py)",
                    "threads": args.threads, "peak_gflops": peak, "peak_gflops_by_size": peaks, "models": {}}
    for name in args.models.split(","):
        data = zoo_core.get_data(name, preset="book")
        zoo = zoo_step(name, data)
        ref = reference_run(args.reference, name, 0, args.epochs, str(args.threads))
        result["models"][name] = {**verdict(zoo, ref, peak), "zoo_profile": zoo,
                                  "reference_run": {k: ref[k] for k in ("command", "train_seconds", "epochs",
                                                                         "train_batches_per_epoch",
                                                                         "train_tgt_tokens_per_s")}}
        print(json.dumps({name: {k: v for k, v in result["models"][name].items() if k != "zoo_profile"}}))
    result["peak_gflops_after"] = max(peak_gflops().values())  # the machine's speed drifts: its range over the run
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "models"}))


if __name__ == "__main__":
    main()
