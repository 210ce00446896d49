"""Where a seq2seq training step spends its time: the book's code (d2l 1.0.3) and the zoo's, CPU time per phase.

    ZOO_DATA=../shared/data python benchmarks/seq2seq_profile.py [--epochs 3] [--repeat 3] [--threads 1]

Both sides train the book's model on the book's batches (128 pairs, 9 steps, 4 batches an epoch) and time each phase
of every step with the process's CPU time (less sensitive than wall time to a busy machine; one thread, so the two
agree when the machine is idle): getting the batch, the forward pass and loss, the backward pass, gradient clipping,
the optimiser step. The reference runs the book's ``Trainer.fit_epoch`` body (d2l's DataLoader over a TensorDataset,
``model.training_step`` with its ``plot`` call, ``clip_gradients`` with its host sync, Adam) in the d2l-reference
tool's virtual environment (``D2L_VENV``, default ``/tmp/d2l-ref-venv``: run the tool once to build it); the zoo runs
the shared Trainer's step (a `TensorLoader` batch, `Seq2Seq.training_step` = `packed_loss`, ``clip_grad_norm_``, fused
Adam). Runs alternate; medians over the steps after the first epoch.

The floating-point work of one step (multiply-adds x 2, forward and backward) is computed from the shapes and the
batch's target lengths: it says how much of the speed-up is less work and how much is less overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Callable

import torch

from _common import write_result
from _cpu_profile import timed_steps

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOOL = ROOT.parent / "shared" / "tools" / "d2l_reference.py"
PHASES = ("batch", "forward", "backward", "clip", "optimizer")

# Runs in the d2l venv: the tool's own setup (its Seq2SeqDecoder, masked-loss Seq2Seq, MTFraEng), then the body of
# d2l's Trainer.fit_epoch, timed by the same clocks as the zoo's step (_cpu_profile.timed_steps, from this folder,
# appended to sys.path so that nothing the tool imports is shadowed).
REFERENCE = r"""
import json, sys, torch
sys.path.append(sys.argv[6])
from _cpu_profile import timed_steps
torch.set_num_threads(int(sys.argv[1]))
epochs, tool = int(sys.argv[2]), sys.argv[3]
sys.argv = ["d2l_reference.py", "seq2seq", "--data", sys.argv[4], "--seed", sys.argv[5]]
source = open(tool).read()
exec(compile(source[:source.index("trainer = d2l.Trainer(")], tool, "exec"))
trainer = d2l.Trainer(max_epochs=1, num_gpus=0, gradient_clip_val=1)
trainer.prepare_data(data); trainer.prepare_model(model)
trainer.optim = model.configure_optimizers()
trainer.epoch = trainer.train_batch_idx = trainer.val_batch_idx = 0
def step(batch, mark):
    loss = model.training_step(trainer.prepare_batch(batch))
    trainer.optim.zero_grad()
    mark()
    with torch.no_grad():
        loss.backward()
        mark()
        trainer.clip_gradients(trainer.gradient_clip_val, model)
        mark(); trainer.optim.step(); mark()
    trainer.train_batch_idx += 1
    return int((batch[-1] != model.tgt_pad).sum())
steps = []
model.train()
for epoch in range(epochs):
    steps += timed_steps(iter(trainer.train_dataloader), step)
print(json.dumps(steps))
"""


def reference_steps(python: str, threads: int, epochs: int, seed: int) -> list[list[float]]:
    proc = subprocess.run([python, "-c", REFERENCE, str(threads), str(epochs), str(TOOL),
                           os.environ.get("ZOO_DATA", ""), str(seed), str(HERE)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def zoo_steps(data, epochs: int, seed: int) -> list[list[float]]:
    """The shared Trainer's step, phase by phase (zoo_core.trainer.Trainer._fit's loop, on the CPU, fp32)."""
    from zoo_core import get_model

    torch.manual_seed(seed)
    model = get_model("seq2seq", preset="book").train()
    optimizer = model.configure_optimizers()
    params = [p for p in model.parameters() if p.requires_grad]
    loader = data.train_dataloader().replace(seed=seed)

    def step(batch, mark: Callable[[], None]) -> int:
        optimizer.zero_grad(set_to_none=True)
        loss = model.training_step(batch)["loss"]
        mark(); loss.backward(); mark()
        torch.nn.utils.clip_grad_norm_(params, 1)
        mark(); optimizer.step(); mark()
        return int(model.batch_weight(batch))

    steps = []
    for epoch in range(epochs):
        steps += timed_steps(loader.iterate(epoch), step)
    return steps


def step_flops(batch_size: int, num_steps: int, labels: int, packed: bool, V_src: int = 194, V_tgt: int = 214,
               E: int = 256, H: int = 256) -> float:
    """Floating-point operations of one training step (2 per multiply-add; forward + backward = 3x the forward's
    matrix products, less the products whose gradient nobody needs), for the book's 2-layer GRU encoder-decoder.

    The book's code: every layer reads all batch * num_steps positions, the first layers' inputs through a matrix
    product per token (the decoder's of width E + H, the context repeated). The zoo's: the decoder reads `labels`
    positions only (packed; `labels` non-pad targets, up to each row's last), the first layers' input products are
    projected embedding tables (V rows), the context is projected once per row, and the first step from the zero
    state needs no product."""
    g = 3 * H
    enc_tokens = batch_size * num_steps
    dec_tokens = labels if packed else enc_tokens
    mm = lambda m, k, n: 2 * m * k * n  # noqa: E731
    if packed:
        first_inputs = 3 * (mm(V_src, E, g) + mm(V_tgt, E, g)) + 3 * mm(batch_size, H, g)
        recurrent = 3 * mm(enc_tokens - batch_size, H, g) * 2 + 3 * mm(dec_tokens, H, g) * 2
    else:
        first_inputs = mm(enc_tokens, E, g) * 3 + mm(dec_tokens, E + H, g) * 3
        recurrent = 3 * mm(enc_tokens, H, g) * 2 + 3 * mm(dec_tokens, H, g) * 2
    second_inputs = 3 * mm(enc_tokens, H, g) + 3 * mm(dec_tokens, H, g)
    dense = 3 * mm(dec_tokens, H, V_tgt)
    return float(first_inputs + recurrent + second_inputs + dense)


def summary(steps: list[list[float]], skip: int) -> dict:
    kept = steps[skip:]
    out = {name: round(statistics.median(s[i] for s in kept) * 1000, 2) for i, name in enumerate(PHASES)}
    out["step"] = round(statistics.median(sum(s[:5]) for s in kept) * 1000, 2)
    out["tgt_tokens_per_cpu_s"] = round(sum(s[5] for s in kept) / sum(sum(s[:5]) for s in kept), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--venv", default=os.environ.get("D2L_VENV", "/tmp/d2l-ref-venv"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seq2seq_profile_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from zoo_core import get_data

    data = get_data("seq2seq", preset="book")
    labels = int((data.splits()["train"][3] != data.tgt_vocab["<pad>"]).sum()) / 4  # non-pad labels, mean batch
    load_before = os.getloadavg()
    zoo, ref = [], []
    for i in range(args.repeat):
        zoo.append(summary(zoo_steps(data, args.epochs, i), 4))
        print("zoo", json.dumps(zoo[-1]), flush=True)
        ref.append(summary(reference_steps(str(Path(args.venv) / "bin" / "python"), args.threads, args.epochs, i), 4))
        print("reference", json.dumps(ref[-1]), flush=True)

    def med(runs: list[dict]) -> dict:
        return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}

    z, r = med(zoo), med(ref)
    flops = {"reference": step_flops(128, 9, 0, packed=False), "zoo": step_flops(128, 9, round(labels), packed=True)}
    write_result(args.out, {
        "benchmark": "seq2seq training step, book preset, CPU time per phase (ms, median over steps and runs)",
        "threads": args.threads, "epochs_per_run": args.epochs, "repeat": args.repeat,
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "zoo": z, "reference": r, "zoo_runs": zoo, "reference_runs": ref,
        "step_cpu_ratio": round(r["step"] / z["step"], 2),
        "gflop_per_step": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "flop_ratio": round(flops["reference"] / flops["zoo"], 2),
        "gflop_per_cpu_s": {"zoo": round(flops["zoo"] / z["step"] / 1e6, 1),
                            "reference": round(flops["reference"] / r["step"] / 1e6, 1)},
    })


if __name__ == "__main__":
    main()
