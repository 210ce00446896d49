"""The book Transformer's CPU training step with subnormal floats computed (the CPU's default) and flushed to zero
(`zoo_core.devices.flush_denormals`, which the Trainer turns on for CPU runs): CPU time per step, and how many
operands of the step's matrix products are subnormal when they are not flushed.

    python benchmarks/denormals.py [--rounds 3] [--models transformer,bahdanau,seq2seq]

Each (model, setting) runs in a fresh process, one thread, malloc keeping freed memory (as the Trainer has it), on
the book preset's training batches (fra-eng, 128 sentences, shuffled with a fixed seed): 3 warm-up epochs (4 steps
each), then 10 timed ones of the Trainer's step (zero grads, loss, backward, clipping at 1, Adam). Settings alternate,
`--rounds` times, so that the machine's drift slows both alike; the medians and their ratio go to the result file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent

STEP = """
import contextlib, json, sys, time, torch
import zoo_core
from zoo_core.devices import flush_denormals, keep_freed_memory
torch.set_num_threads(1)
keep_freed_memory()
name, setting = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = zoo_core.get_model(name, preset="book").train()
data = zoo_core.get_data(name, preset="book")
split = data.splits()["train"]
order = torch.randperm(len(split[0]), generator=torch.Generator().manual_seed(0))
split = [t[order] for t in split]
batches = [tuple(t[i:i + 128] for t in split) for i in range(0, len(split[0]), 128)]
optimizer = model.configure_optimizers()
params = list(model.parameters())

def epoch():
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

def subnormal_operands():  # of one step's matrix products, not flushed: (subnormal, all) entries
    from torch.utils._python_dispatch import TorchDispatchMode
    products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}
    tiny, counts = torch.finfo(torch.float32).tiny, [0, 0]
    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                for a in args:
                    if isinstance(a, torch.Tensor) and a.is_floating_point():
                        counts[0] += int(((a != 0) & (a.abs() < tiny)).sum())
                        counts[1] += a.numel()
            return func(*args, **(kwargs or {}))
    with Count():
        batch = batches[0]
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch)["loss"].backward()
    return counts

with flush_denormals() if setting == "flushed" else contextlib.nullcontext():
    for _ in range(3):
        epoch()
    cpu = time.process_time()
    for _ in range(10):
        epoch()
    ms = (time.process_time() - cpu) / (10 * len(batches)) * 1e3
record = {"model": name, "setting": setting, "cpu_ms_per_step": round(ms, 1)}
if setting == "computed":
    sub, total = subnormal_operands()
    record["subnormal_operands_of_products"] = {"subnormal": sub, "all": total, "share": round(sub / total, 6)}
print(json.dumps(record))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="transformer,bahdanau,seq2seq")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "denormals_cpu.json"))
    a = p.parse_args()
    runs: dict[str, dict[str, list]] = {}
    for _ in range(a.rounds):
        for model in a.models.split(","):
            for setting in ("computed", "flushed"):
                out = subprocess.run([sys.executable, "-c", STEP, model, setting], check=True, capture_output=True,
                                     text=True).stdout
                record = json.loads(out.strip().splitlines()[-1])
                print(json.dumps(record), flush=True)
                runs.setdefault(model, {}).setdefault(setting, []).append(record)
    result = {"benchmark": "CPU time of one training step (book preset, fra-eng, one thread), subnormal floats "
                           "computed vs flushed to zero",
              "rounds": a.rounds, "models": {}}
    for model, settings in runs.items():
        medians = {s: statistics.median(r["cpu_ms_per_step"] for r in rs) for s, rs in settings.items()}
        result["models"][model] = {
            "cpu_ms_per_step_median": medians,
            "speedup_flushed": round(medians["computed"] / medians["flushed"], 2),
            "subnormal_operands_of_products": settings["computed"][0]["subnormal_operands_of_products"],
            "runs": settings}
    write_result(a.out, result)


if __name__ == "__main__":
    main()
