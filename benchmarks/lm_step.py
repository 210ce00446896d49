"""One training step of the chapter 10 language models on the CPU, with and without malloc keeping freed memory:
CPU time and page faults per step (`zoo_core.devices.keep_freed_memory`, which the Trainer turns on for CPU runs).

    python benchmarks/lm_step.py [--models lstm-lm,gru-lm,deep-rnn-lm] [--rounds 2]

Each (model, setting) runs in a fresh process (a process cannot hand kept memory back), one thread, on a random batch
of the book's shape (1,024 windows of 32 tokens, vocabulary 28): 5 warm-up steps, then 30 timed ones (forward, loss,
backward, clipping at 1, SGD). Settings alternate, `--rounds` times, so that a busy machine slows both alike. Prints
one line per process; writes nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

STEP = """
import resource, sys, time, torch
import zoo_core
from zoo_core.devices import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[2] == "kept":
    keep_freed_memory()
torch.manual_seed(0)
model = zoo_core.get_model(sys.argv[1])
optimizer = model.configure_optimizers()
X, Y = torch.randint(0, 28, (1024, 32)), torch.randint(0, 28, (1024, 32))
params = list(model.parameters())
def step():
    optimizer.zero_grad(set_to_none=True)
    model.training_step((X, Y))["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
for _ in range(5):
    step()
before, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
for _ in range(30):
    step()
cpu, after = (time.process_time() - cpu) / 30, resource.getrusage(resource.RUSAGE_SELF)
print(f"{sys.argv[1]:12} {sys.argv[2]:8} {cpu * 1e3:6.1f} ms CPU a step, {(after.ru_minflt - before.ru_minflt) / 30:6.0f} "
      f"page faults, {(after.ru_stime - before.ru_stime) / 30 * 1e3:5.1f} ms of it in the kernel")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="lstm-lm,gru-lm,deep-rnn-lm")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    for _ in range(a.rounds):
        for model in a.models.split(","):
            for setting in ("default", "kept"):
                subprocess.run([sys.executable, "-c", STEP, model, setting], check=True)


if __name__ == "__main__":
    main()
