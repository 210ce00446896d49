"""transformer (d2l §11.7), the book's recipe, with the zoo and with the book's own code (d2l 1.0.3), in the same run.

    ZOO_DATA=../shared/data python benchmarks/transformer.py [--epochs 30] [--repeat 1] [--threads 1] [--precision bf16]

The zoo side is what a user runs, in this process: ``zoo train transformer --threads T --seed i``
(`zoo_core.workflows.train`), ``zoo export transformer --onnx`` (``encoder.onnx``, ``decoder_step.onnx``,
``model.onnx``, each with its ONNX Runtime parity), ``zoo predict transformer SENTENCE... [--beam 4] [--runtime
onnx]`` (`zoo_core.predict`). The reference is the d2l-reference tool (``--reference CMD``; default
``../shared/tools/d2l-reference``) in its own process with ``OMP_NUM_THREADS=T``. Repetition i trains both with seed
i, the zoo first. Compared:

- training speed: target tokens per second, the non-pad labels of the batches trained (both sides count the same
  2,136 an epoch), over training time only. The target is 3x the reference.
- quality: the zoo's validation masked cross-entropy over every non-pad validation token with the causal decoder
  (a next-token loss); the same model's *leaky* figure computed the book's way (`Transformer.leaky_validation_loss`:
  no causal mask in evaluation), which is what the reference's ``val_loss`` is (3.36 here); the book's four sentences
  translated greedily (both sides) and with beam search (4) on ONNX Runtime, their BLEU (k=2); the corpus BLEU
  (sacreBLEU, tokenize "none") of the 129 validation sentences, greedy and beam 4.
- generation on ONNX Runtime: greedy and beam search (4) on the exported graphs give PyTorch's tokens for every
  validation sentence.
- where the time goes (``--profile``): training steps of each side (the reference's own classes in its environment,
  the DataLoader's batches in memory; the zoo's packed loss and, for comparison, its forward pass), CPU time per step
  over 5 epochs (process time, which other work on the cores does not inflate as it inflates wall time), FLOPs per
  epoch (FlopCounterMode) and the operators that take the most self CPU time (torch.profiler).
- the KV cache: the four sentences decoded greedily, one at a time, on ONNX Runtime, with the cached
  ``decoder_step`` against re-running an uncached decoder (`zoo_attention.transformer.prefix_graph`) over the whole
  prefix at each step (both after the same ``encoder`` session); the same tokens, and the time ratio (median of
  repeated runs). Sentences of the book are short (at most 9 steps), so the gain is small.

The driver (these options, the alternating runs, the medians and the speed ratio, the result file) is
benchmarks/_translation.py's, shared with seq2seq.py and bahdanau.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import write_result
from _cpu_profile import epoch_profile
from _translation import (RUNTIMES, SENTENCES, alternate, arguments, bleu_at_least, book_sentences, median, scored,
                          summary, train_and_export, training_figures, validation_decoding)
import zoo_core
from zoo_attention.transformer import prefix_graph
from zoo_core.devices import flush_denormals, keep_freed_memory
from zoo_core.onnx_export import export_graph
from zoo_core.parity import _session
from zoo_core.text import BOS, EOS

HERE = Path(__file__).resolve().parent
NAME = "transformer"
CPU_EPOCHS = 5  # --profile: epochs timed in CPU time (time.process_time) per side, after one warm-up epoch


def val_masked_ce(model, data, leaky: bool = False) -> float:
    """The masked cross-entropy over all non-pad validation tokens (eval mode): the causal forward pass, or the
    book's leaky one."""
    batch = data.splits()["val"]
    model.eval()
    with torch.no_grad():
        loss = model.leaky_validation_loss(batch) if leaky else model.loss(model(*batch[:3]), batch[3])
    return float(loss)


def kv_cache_speed(model, data, files: dict, folder: Path, repeats: int) -> dict:
    """Greedy decoding of the four sentences, one at a time, on ONNX Runtime: the cached decoder_step against the
    uncached decoder over the whole prefix at each step. Median seconds for the four, and their ratio."""
    prefix = prefix_graph(model)
    export_graph(model, prefix, folder / prefix.file)
    enc = _session(files["encoder"], "CPUExecutionProvider")
    step = _session(files["decoder_step"], "CPUExecutionProvider")
    uncached = _session(folder / prefix.file, "CPUExecutionProvider")
    src_vocab, tgt_vocab = data.src_vocab, data.tgt_vocab
    bos, eos, num_steps = tgt_vocab[BOS], tgt_vocab[EOS], data.num_steps
    sources = [data.encode_source([s], src_vocab, num_steps) for s in SENTENCES]
    d = model.num_hiddens // model.num_heads
    empty = np.zeros((1, model.num_blks, model.num_heads, 0, d), dtype=np.float32)

    def decode(cached: bool) -> list[list[int]]:
        out = []
        for src, valid in sources:
            cross_K, cross_V, cross_bias = enc.run(None, {"src": src.numpy(), "src_valid_len": valid.numpy()})
            memory = {"cross_K": cross_K, "cross_V": cross_V, "cross_bias": cross_bias}
            tokens, K, V = [bos], empty, empty
            for _ in range(num_steps):
                if cached:
                    logits, K, V = step.run(None, {"tokens": np.array(tokens[-1:], dtype=np.int64), **memory,
                                                   "K": K, "V": V})
                else:
                    (logits,) = uncached.run(None, {"tgt": np.array([tokens], dtype=np.int64), **memory})
                tokens.append(int(logits[0].argmax()))
                if tokens[-1] == eos:
                    break
            out.append(tokens[1:])
        return out

    same = decode(True) == decode(False)
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    for _ in range(repeats):  # alternating, so that load on the machine hits both alike
        for kind in ("cached", "uncached"):
            t = time.perf_counter()
            decode(kind == "cached")
            times[kind].append(time.perf_counter() - t)
    cached, full = statistics.median(times["cached"]), statistics.median(times["uncached"])
    return {"same_tokens": same, "repeats": repeats, "cached_ms_median": round(cached * 1e3, 3),
            "uncached_ms_median": round(full * 1e3, 3), "speedup": round(full / cached, 2),
            "steps": [len(t) for t in decode(True)]}


REFERENCE_PROFILE = r"""
import json, math, os, sys, torch
from torch import nn
from d2l import torch as d2l
src = open(sys.argv[1]).read()  # the reference tool: its Transformer decoder and masked-loss Seq2Seq, as it trains them
exec(src[src.index("class TransformerDecoderBlock"):src.index("class PatchEmbedding")])
exec(src[src.index("class Seq2Seq(d2l.Seq2Seq)"):src.index("class Seq2SeqAttentionDecoder")])
d2l.DataModule.__init__.__defaults__ = (sys.argv[2], 4)
d2l.download = lambda url, folder="../data", sha1_hash=None: os.path.join(folder, url.split("/")[-1])
d2l.extract = lambda *a, **k: None
data = d2l.MTFraEng(batch_size=128)
torch.manual_seed(0)
model = Seq2Seq(d2l.TransformerEncoder(len(data.src_vocab), 256, 64, 4, 2, 0.2),
                TransformerDecoder(len(data.tgt_vocab), 256, 64, 4, 2, 0.2), tgt_pad=data.tgt_vocab["<pad>"], lr=0.001)
batches = list(data.get_dataloader(True))
model(*batches[0][:-1])
opt = model.configure_optimizers()
def epoch():
    for b in batches:
        l = model.loss(model(*b[:-1]), b[-1]); opt.zero_grad(); l.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1); opt.step()
sys.path.append(sys.argv[3])  # appended: nothing the d2l library imports is shadowed
from _cpu_profile import epoch_profile
model.train()
print(json.dumps(epoch_profile(epoch, len(batches), CPU_EPOCHS)))
"""


def profile_sides(reference: str, data, threads: int, precision: str = "32") -> dict:
    """Training steps of each side at `threads` threads (`_cpu_profile.epoch_profile`, over `CPU_EPOCHS` epochs).
    The zoo: its packed training loss and its forward pass (the book's computation) on the same batches, with the
    Trainer's CPU settings (freed memory kept, subnormals flushed) and its `precision` (bf16: under autocast, as
    ``zoo train --precision bf16``); the reference: its own classes in its own environment, in float32."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo_core.get_model(NAME, preset="book").train()
    src, tgt_in, valid, tgt_out = data.splits()["train"]
    batches = [tuple(t[i:i + 128] for t in (src, tgt_in, valid, tgt_out)) for i in range(0, len(src), 128)]
    opt = model.configure_optimizers()
    result = {}
    for name, loss_fn in (("zoo_packed_loss", model.packed_loss),
                          ("zoo_forward_pass", lambda b: model.loss(model(*b[:3]), b[3]))):
        def epoch() -> None:
            for b in batches:
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = loss_fn(b)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1)
                opt.step()
        keep_freed_memory()
        with flush_denormals():
            result[name] = epoch_profile(epoch, len(batches), CPU_EPOCHS)
    if reference:
        tool = Path(reference).resolve().parent / "d2l_reference.py"
        venv = Path(os.environ.get("D2L_VENV", "/tmp/d2l-ref-venv")) / "bin" / "python"
        script = REFERENCE_PROFILE.replace("CPU_EPOCHS", str(CPU_EPOCHS))
        proc = subprocess.run([str(venv), "-c", script, str(tool), os.environ.get("ZOO_DATA", ""), str(HERE)],
                              capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise SystemExit(f"the reference profile failed: {proc.stderr[-2000:]}")
        result["reference"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def zoo_run(data, seed: int, epochs: int, threads: int, out: Path, kv_repeats: int, precision: str = "32") -> dict:
    """One zoo run: its speed, both validation losses, the book's sentences greedily and with beam 4 on both
    runtimes, the validation corpus BLEU of ONNX Runtime's translations, the ONNX checks and the KV cache's gain."""
    run = train_and_export(NAME, seed, epochs, threads, out, precision)
    answers = {(rt, beam): book_sentences(NAME, run, out, rt, beam) for rt in RUNTIMES for beam in (1, 4)}
    sentences = {f"{'greedy' if beam == 1 else 'beam4'}_{rt}": scored(answers[(rt, beam)]) for rt, beam in answers}
    identical, bleus = validation_decoding(data, run, "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        kv = kv_cache_speed(run.model, data, run.files, Path(tmp), kv_repeats)
    return {**training_figures(run),
            "val_loss_causal": round(val_masked_ce(run.model, data), 4),
            "val_loss_leaky_books_way": round(val_masked_ce(run.model, data, leaky=True), 4),
            "sentences": sentences, **bleus,
            "predict_onnx_equals_torch": {f"beam{b}": answers[("onnx", b)] == answers[("torch", b)] for b in (1, 4)},
            "onnx_identical_to_torch": identical, "onnx_parity_passed": run.parity, "kv_cache_onnx": kv,
            "run": run.dir.name}


def options(parser: argparse.ArgumentParser) -> None:
    """The transformer's own options: the KV cache's timing, and the profile."""
    parser.add_argument("--kv-repeats", type=int, default=30, help="timed runs of each decoder for the cache ratio")
    parser.add_argument("--profile", action="store_true", help="also profile one epoch of each side")


def main() -> None:
    args = arguments(__doc__, NAME, options)
    if args.rng != "zoo":
        raise SystemExit("transformer.py: the zoo's Transformer cannot replay the book's random stream (--rng book)")
    runs = alternate(NAME, args, lambda data, seed, out: zoo_run(data, seed, args.epochs, args.threads, out,
                                                                 args.kv_repeats, args.precision))
    profiled = (profile_sides(args.reference if runs.used_reference else "", runs.data, args.threads, args.precision)
                if args.profile else None)
    zoo = runs.zoo
    result = summary(NAME, runs, {
        "val_loss_causal_median": round(median(zoo, "val_loss_causal"), 4),
        "val_loss_leaky_books_way_median": round(median(zoo, "val_loss_leaky_books_way"), 4),
        "kv_cache_speedup_median": statistics.median(z["kv_cache_onnx"]["speedup"] for z in zoo)},
        lambda ref: {"val_loss_leaky_median": round(median(ref, "val_loss"), 4)})
    if runs.ref:
        result["bleu_at_least_reference_on_each_sentence_per_seed"] = {
            kind: [bleu_at_least(z["sentences"][kind], r["sentences"]) for z, r in zip(zoo, runs.ref)]
            for kind in ("greedy_torch", "beam4_onnx")}
    if profiled:
        result["profile"] = profiled
        if "reference" in profiled:
            result["cpu_time_per_step_ratio"] = round(profiled["reference"]["cpu_ms_per_step"]
                                                      / profiled["zoo_packed_loss"]["cpu_ms_per_step"], 2)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
