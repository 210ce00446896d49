"""One epoch of `softmax` (book preset: Fashion-MNIST, batch 256, lr 0.1) with the zoo and with the book's d2l library.

    ZOO_DATA=../shared/data python benchmarks/softmax_epoch.py [--repeat 3] [--device cpu]

Both sides are timed the same way: training batches of one epoch, validation excluded, after the data is loaded;
the reported accuracy is on the 10,000 validation images after that epoch. Runs alternate (zoo, reference, zoo, ...)
so that a busy machine slows both alike; repetition i uses seed i on both sides (initialisation and data order), since
one epoch's accuracy varies with them by about a point. Medians are compared: speed, and accuracy over the seeds.

The reference is the book's own code (d2l 1.0.3: ``d2l.FashionMNIST``, ``d2l.SoftmaxRegression``, ``d2l.Trainer``)
run by the d2l-reference tool (``--reference CMD``; default ``../shared/tools/d2l-reference`` beside the checkout),
since d2l pins old releases of its dependencies and lives in a virtual environment of its own. Without it, only the
zoo's figures are recorded.
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
TARGET_RATIO = 1.5


def zoo_epoch(data, device: str, seed: int) -> dict:
    torch.manual_seed(seed)
    model = get_model("softmax", preset="book")
    result = Trainer(max_epochs=1, device=device, seed=seed, progress=False, log=lambda line: None).fit(model, data)
    return {"examples_per_s": result.examples_per_s, "train_seconds": result.seconds,
            "val_acc": result.metrics["val_acc"]}


def reference_epoch(command: str, device: str, seed: int) -> dict:
    proc = subprocess.run([command, "softmax", "--epochs", "1", "--device", device, "--seed", str(seed)],
                          capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")})
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"examples_per_s": out["train_examples_per_s"], "train_seconds": out["train_seconds"],
            "val_acc": out["val_acc"], "impl": out["impl"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command ('' to skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "softmax_epoch_cpu.json"))
    args = parser.parse_args()

    data = get_data("softmax", preset="book")
    data.splits()  # load once, outside the timings (the reference's DataLoader setup is inside its epoch)
    use_reference = bool(args.reference) and Path(args.reference).exists()
    zoo_runs, ref_runs = [], []
    for i in range(args.repeat):
        zoo_runs.append(zoo_epoch(data, args.device, seed=i))
        print(f"zoo run {i + 1}: {zoo_runs[-1]}", flush=True)
        if use_reference:
            ref_runs.append(reference_epoch(args.reference, args.device, seed=i))
            print(f"reference run {i + 1}: {ref_runs[-1]}", flush=True)

    def summary(runs: list[dict]) -> dict:
        return {"examples_per_s_median": round(statistics.median(r["examples_per_s"] for r in runs), 1),
                "examples_per_s": [round(r["examples_per_s"], 1) for r in runs],
                "val_acc_median": round(statistics.median(r["val_acc"] for r in runs), 4),
                "val_acc": [round(r["val_acc"], 4) for r in runs], "seeds": list(range(len(runs)))}

    result = {"benchmark": "one epoch of softmax, book preset, Fashion-MNIST", "device": args.device,
              "zoo": summary(zoo_runs)}
    if ref_runs:
        result["reference"] = {**summary(ref_runs), "impl": ref_runs[0]["impl"]}
        ratio = result["zoo"]["examples_per_s_median"] / result["reference"]["examples_per_s_median"]
        result.update(speed_ratio=round(ratio, 2), target_ratio=TARGET_RATIO, meets_target=ratio >= TARGET_RATIO,
                      val_acc_median_difference=round(result["zoo"]["val_acc_median"]
                                                      - result["reference"]["val_acc_median"], 4))
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    write_result(args.out, result)


if __name__ == "__main__":
    main()
