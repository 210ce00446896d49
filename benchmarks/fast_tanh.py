"""``torch.tanh`` against `zoo_core.fast_math.tanh_` (2 sigmoid(2x) - 1) on this CPU: the kernel alone, and the
training steps of the models whose hand-written loops call it (CPU time per step).

    ZOO_DATA=../shared/data python benchmarks/fast_tanh.py [--rounds 12] [--models deep-rnn-lm,gru-lm,seq2seq,bahdanau]

Kernel: one thread, a GRU gate of the language models (1024, 32) and one decoder step's attention features of
bahdanau (128, 9, 256), each function timed over 2,000 (200) calls, alternating, 5 rounds; median microseconds a call.

Steps: each model in its own process, one thread, malloc keeping freed memory and subnormals flushed (as the Trainer
has it on the CPU). Within the process the two tanh implementations alternate (the modules' ``tanh_`` swapped: same
weights' trajectory aside, same work), `--rounds` rounds of 5 timed steps each after a warm-up step, so that the
machine's drift slows both alike; the result is the median of the per-round ratios. The language models train on
random windows of the book's shape (1,024 x 32 tokens); the translation models on the book preset's fra-eng batches
(128 sentences).
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

KERNEL = """
import json, statistics, time, torch
from zoo_core.fast_math import tanh_
torch.set_num_threads(1)
out = {}
for shape, n in (((1024, 32), 2000), ((128, 9, 256), 200)):
    x = torch.randn(shape) * 2
    y = torch.empty_like(x)
    fns = {"torch.tanh": lambda: torch.tanh(x, out=y), "fast_math.tanh_": lambda: tanh_(y.copy_(x)),
           "copy (in tanh_'s figure)": lambda: y.copy_(x), "torch.sigmoid": lambda: torch.sigmoid(x, out=y)}
    times = {k: [] for k in fns}
    for _ in range(5):
        for k, f in fns.items():
            for _ in range(20):
                f()
            t = time.perf_counter()
            for _ in range(n):
                f()
            times[k].append((time.perf_counter() - t) / n * 1e6)
    out[str(tuple(shape))] = {k: round(statistics.median(v), 1) for k, v in times.items()}
print(json.dumps(out))
"""

STEP = """
import json, statistics, sys, time, torch
import zoo_core
from zoo_core.devices import flush_denormals, keep_freed_memory
from zoo_core.fast_math import tanh_ as fast
import zoo_modern_rnn.recurrence, zoo_modern_rnn.gru_train
modules = [zoo_modern_rnn.recurrence, zoo_modern_rnn.gru_train]
torch.set_num_threads(1)
keep_freed_memory()
name, rounds = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = zoo_core.get_model(name, preset="book").train()
if name in ("seq2seq", "bahdanau"):
    import zoo_attention.bahdanau
    modules.append(zoo_attention.bahdanau)
    split = zoo_core.get_data(name, preset="book").splits()["train"]
    order = torch.randperm(len(split[0]), generator=torch.Generator().manual_seed(0))
    split = [t[order] for t in split]
    batches = [tuple(t[i:i + 128] for t in split) for i in range(0, len(split[0]), 128)]
else:
    batches = [(torch.randint(0, 28, (1024, 32)), torch.randint(0, 28, (1024, 32)))]
optimizer = model.configure_optimizers()
params = list(model.parameters())
step_no = 0
def step():
    global step_no
    batch = batches[step_no % len(batches)]
    step_no += 1
    optimizer.zero_grad(set_to_none=True)
    model.training_step(batch)["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
impl = {"torch.tanh": lambda x: x.tanh_(), "fast_math.tanh_": fast}
times = {k: [] for k in impl}
with flush_denormals():
    for _ in range(4):
        step()
    for r in range(rounds):
        for k in (list(impl) if r % 2 == 0 else list(impl)[::-1]):
            for m in modules:
                m.tanh_ = impl[k]
            step()
            t = time.process_time()
            for _ in range(5):
                step()
            times[k].append((time.process_time() - t) / 5 * 1e3)
ratios = [a / b for a, b in zip(times["torch.tanh"], times["fast_math.tanh_"])]
print(json.dumps({"model": name,
                  "cpu_ms_per_step_median": {k: round(statistics.median(v), 1) for k, v in times.items()},
                  "speedup_per_round": [round(x, 3) for x in ratios],
                  "speedup_median": round(statistics.median(ratios), 3)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="deep-rnn-lm,gru-lm,seq2seq,bahdanau")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_tanh_cpu.json"))
    a = p.parse_args()
    run = lambda code, *args: json.loads(subprocess.run([sys.executable, "-c", code, *args], check=True,
                                                        capture_output=True, text=True).stdout.splitlines()[-1])
    kernel = run(KERNEL)
    print(json.dumps(kernel), flush=True)
    models = {}
    for model in a.models.split(","):
        models[model] = run(STEP, model, str(a.rounds))
        print(json.dumps(models[model]), flush=True)
    write_result(a.out, {
        "command": "python benchmarks/fast_tanh.py " + " ".join(sys.argv[1:]),
        "benchmark": __doc__.split("\n\n")[0].replace("\n", " "),
        "rounds": a.rounds,
        "kernel_us_per_call_median": kernel,
        "models": models,
        "speedup_median": {m: r["speedup_median"] for m, r in models.items()},
    })


if __name__ == "__main__":
    main()
