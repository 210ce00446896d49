"""One epoch of a CNN's book preset (LeNet, or ResNet-18) with the zoo and with the book's d2l library, same run.

    ZOO_DATA=../shared/data python benchmarks/cnn_epoch.py --model lenet [--repeat 3] [--device cpu]
    ZOO_DATA=../shared/data python benchmarks/cnn_epoch.py --model resnet18 --device cuda --max-batches 100

Both sides are timed the same way: the training batches of one epoch (or the first ``--max-batches``), validation
excluded, after the data is loaded; accuracy is on the 10,000 validation images after that training. Runs alternate
(zoo, reference, zoo, ...) so that a busy machine slows both alike; repetition i uses seed i on both sides
(initialisation and data order). Medians are compared: examples/s (their ratio is the figure of merit) and accuracy.

The zoo side builds the model with ``zoo_core.get_model(name, preset="book")`` and trains it with the shared
`zoo_core.Trainer`, so any registered model with a Fashion-MNIST book preset works (``resnet18`` once zoo-modern-cnn
is installed). The reference is the book's own code (d2l 1.0.3) run by the d2l-reference tool (``--reference CMD``;
default ``../shared/tools/d2l-reference`` beside the checkout); without it, only the zoo's figures are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

import torch

from _common import write_result
from zoo_core import Trainer, get_data, get_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "tools" / "d2l-reference"
MODELS = ("lenet", "resnet18")
TARGET_RATIOS = {("lenet", "cpu"): 2.0}  # the zoo's LeNet on CPU must train at least twice as fast as the book's


def zoo_epoch(name: str, data, device: str, precision: str, seed: int, max_batches: int | None) -> dict:
    torch.manual_seed(seed)
    model = get_model(name, preset="book")
    result = Trainer(max_epochs=1, max_steps=max_batches, device=device, precision=precision, seed=seed,
                     progress=False, log=lambda line: None).fit(model, data)
    return {"examples_per_s": result.examples_per_s, "train_seconds": result.seconds, "steps": result.steps,
            "val_acc": result.metrics["val_acc"], "precision": result.precision}


def reference_epoch(command: str, name: str, device: str, seed: int, max_batches: int | None) -> dict:
    args = [command, name, "--epochs", "1", "--device", device, "--seed", str(seed)]
    if max_batches:
        args += ["--max-batches", str(max_batches)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")})
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"examples_per_s": out["train_examples_per_s"], "train_seconds": out["train_seconds"],
            "val_acc": out["val_acc"], "impl": out["impl"], "threads": out.get("threads")}


def summary(runs: list[dict]) -> dict:
    return {"examples_per_s_median": round(statistics.median(r["examples_per_s"] for r in runs), 1),
            "examples_per_s": [round(r["examples_per_s"], 1) for r in runs],
            "val_acc_median": round(statistics.median(r["val_acc"] for r in runs), 4),
            "val_acc": [round(r["val_acc"], 4) for r in runs], "seeds": list(range(len(runs)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="lenet")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="auto", help="the zoo's precision (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--max-batches", type=int, default=None, help="train only this many batches per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the zoo side (default: torch's choice, as the reference)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command ('' to skip)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/<model>_epoch_<device>.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or str(ROOT / "benchmarks" / "results" / f"{args.model}_epoch_{args.device}.json")

    load_before = os.getloadavg()  # the machine may be shared: record how busy it was
    data = get_data(args.model, preset="book")
    data.splits()  # load once, outside the timings (the reference's DataLoader setup is inside its epoch)
    use_reference = bool(args.reference) and Path(args.reference).exists()
    zoo_runs, ref_runs = [], []
    for i in range(args.repeat):
        zoo_runs.append(zoo_epoch(args.model, data, args.device, args.precision, i, args.max_batches))
        print(f"zoo run {i + 1}: {zoo_runs[-1]}", flush=True)
        if use_reference:
            ref_runs.append(reference_epoch(args.reference, args.model, args.device, i, args.max_batches))
            print(f"reference run {i + 1}: {ref_runs[-1]}", flush=True)

    what = f"{args.max_batches} batches" if args.max_batches else "one epoch"
    result = {"benchmark": f"{what} of {args.model}, book preset, Fashion-MNIST", "model": args.model,
              "device": args.device, "max_batches": args.max_batches,
              "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
              "zoo": {**summary(zoo_runs), "precision": zoo_runs[0]["precision"], "threads": torch.get_num_threads()}}
    if ref_runs:
        result["reference"] = {**summary(ref_runs), "impl": ref_runs[0]["impl"], "threads": ref_runs[0]["threads"]}
        ratio = result["zoo"]["examples_per_s_median"] / result["reference"]["examples_per_s_median"]
        result.update(speed_ratio=round(ratio, 2), val_acc_median_difference=round(
            result["zoo"]["val_acc_median"] - result["reference"]["val_acc_median"], 4))
        target = TARGET_RATIOS.get((args.model, args.device))
        if target is not None:
            result.update(target_ratio=target, meets_target=ratio >= target)
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    write_result(out, result)


if __name__ == "__main__":
    main()
