"""ViT (d2l §11.8), the book's preset, with the zoo (``zoo train vit``) and the book's own code (d2l 1.0.3), same run.

    ZOO_DATA=../shared/data python benchmarks/vit.py [--max-batches 3] [--repeat 3] [--threads 1] [--precision bf16]
    ZOO_DATA=../shared/data python benchmarks/vit.py --device cuda --epochs 10 --repeat 1   # the book's recipe (GPU)

Each side runs as a user runs it, in its own process, with the same thread count (``--threads``, also as
``OMP_NUM_THREADS``): ``zoo train vit --max-steps N --threads T --seed i`` (N = epochs x batches) and
``d2l-reference vit --max-batches N --seed i`` (``--reference CMD``; default ``../shared/tools/d2l-reference``).
Repetition i trains both with seed i; the order alternates (zoo first, then reference first, ...) so that a busy
machine slows both alike. Compared: training examples per second over the training batches (both sides time the
training steps only: the zoo from its first step, with the data already in memory; the reference its epochs' loop,
DataLoader included, as the book's ``fit_epoch`` runs it, validation excluded), medians over the repetitions; and the
validation accuracy on the 10,000 test images after that training (at 3 batches both are at chance).

The zoo's target on CPU is 2x the reference's examples/s. Where the reference loses time (profiled at one thread,
batch 128): its last block computes every token's output although the head reads the ``<cls>`` token alone, and
projects every token's keys and values for it (the zoo computes the ``<cls>`` row only, associating the attention's
products the other way: 126 instead of 240 million multiply-adds per image forward, the same logits and gradients);
and its data pipeline resizes each image with PIL in 4 DataLoader worker processes that start with each epoch and
prefetch 8 batches, competing for the cores with the training (the zoo resizes each batch with one interpolation). And both pay
glibc's malloc: it maps every tensor over 32 MB afresh and unmaps it on free, so each 39 MB MLP activation costs
~9,500 page faults per use, ~0.2 s of system time a step; the zoo's Trainer keeps freed memory on the CPU
(`zoo_core.devices.keep_freed_memory`): 1.05 instead of 1.45 s of CPU time per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "tools" / "d2l-reference"
ZOO = Path(sys.executable).with_name("zoo")
TARGET_RATIO = {"cpu": 2.0}


def env_for(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def zoo_run(seed: int, steps: int | None, epochs: int, threads: int | None, device: str, out: Path,
            precision: str = "auto") -> dict:
    args = [str(ZOO), "train", "vit", "--epochs", str(epochs), "--seed", str(seed), "--device", device,
            "--out", str(out)]
    if precision != "auto":
        args += ["--precision", precision]
    if steps:
        args += ["--max-steps", str(steps)]
    if threads:
        args += ["--threads", str(threads)]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=7200, env=env_for(threads))
    if proc.returncode != 0:
        raise SystemExit(f"zoo train failed: {proc.stderr[-2000:]}")
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    train, metrics = manifest["train"], manifest["metrics"]
    return {"examples_per_s": train["examples_per_s"], "train_seconds": train["seconds"], "steps": train["steps"],
            "examples": train["examples"], "val_acc": round(metrics["val_acc"], 4), "precision": train["precision"],
            "threads": train["threads"], "process_seconds": round(time.perf_counter() - started, 1),
            "command": ("" if not threads else f"OMP_NUM_THREADS={threads} ") + " ".join(["zoo", *args[1:]])}


def reference_run(command: str, seed: int, max_batches: int | None, epochs: int, threads: int | None,
                  device: str) -> dict:
    args = [command, "vit", "--epochs", str(epochs), "--seed", str(seed), "--device", device]
    if max_batches:
        args += ["--max-batches", str(max_batches)]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=7200, env=env_for(threads))
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"examples_per_s": out["train_examples_per_s"], "train_seconds": out["train_seconds"],
            "batches_per_epoch": out["train_batches_per_epoch"], "val_acc": out["val_acc"], "impl": out["impl"],
            "threads": out.get("threads"), "process_seconds": round(time.perf_counter() - started, 1),
            "command": ("" if not threads else f"OMP_NUM_THREADS={threads} ") + " ".join(args)}


def summary(runs: list[dict]) -> dict:
    return {"examples_per_s_median": round(statistics.median(r["examples_per_s"] for r in runs), 1),
            "val_acc_median": round(statistics.median(r["val_acc"] for r in runs), 4), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-batches", type=int, default=3, help="training batches per epoch (0: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides (0: torch's choice)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("auto", "32", "bf16"), default="auto",
                        help="the zoo's ``zoo train --precision`` (auto: float32 on the CPU, bf16 autocast on CUDA)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command ('' to skip)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/vit_<device>.json")
    args = parser.parse_args()
    if args.max_batches and args.epochs != 1:
        parser.error("--max-batches caps each epoch on the reference side, but the zoo's --max-steps the whole run: "
                     "use one epoch with it")
    out = args.out or str(ROOT / "benchmarks" / "results" / f"vit_{args.device}.json")
    threads = args.threads or None
    steps = args.max_batches or None
    load_before = os.getloadavg()  # a shared machine: record how busy it was
    use_reference = bool(args.reference) and Path(args.reference).exists()
    zoo, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            sides = ["zoo", "reference"] if i % 2 == 0 else ["reference", "zoo"]
            for side in sides:
                if side == "zoo":
                    zoo.append(zoo_run(i, steps, args.epochs, threads, args.device, Path(tmp), args.precision))
                    print(f"zoo run {i + 1}: {json.dumps(zoo[-1])}", flush=True)
                elif use_reference:
                    ref.append(reference_run(args.reference, i, steps, args.epochs, threads, args.device))
                    print(f"reference run {i + 1}: {json.dumps(ref[-1])}", flush=True)

    what = f"{args.max_batches} batches of batch 128" if args.max_batches else f"{args.epochs} epochs"
    result = {"benchmark": f"vit, book preset (Fashion-MNIST 96 px), {what}, training examples/s, zoo vs d2l 1.0.3",
              "model": "vit", "device": args.device, "precision": args.precision, "max_batches": steps,
              "epochs": args.epochs,
              "threads": threads or "torch default",
              "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
              "zoo": summary(zoo)}
    if ref:
        result["reference"] = summary(ref)
        ratio = result["zoo"]["examples_per_s_median"] / result["reference"]["examples_per_s_median"]
        result["speed_ratio"] = round(ratio, 2)
        result["speed_ratios_per_repetition"] = [round(z["examples_per_s"] / r["examples_per_s"], 2)
                                                 for z, r in zip(zoo, ref)]
        if args.device in TARGET_RATIO:
            result.update(target_ratio=TARGET_RATIO[args.device], meets_target=ratio >= TARGET_RATIO[args.device])
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    write_result(out, result)


if __name__ == "__main__":
    main()
