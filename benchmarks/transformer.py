"""transformer (d2l §11.7), the book's recipe, with the zoo and with the book's own code (d2l 1.0.3), in the same run.

    ZOO_DATA=../shared/data python benchmarks/transformer.py [--epochs 30] [--repeat 1] [--threads 1]

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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import write_result
import zoo_core
from zoo_attention.transformer import prefix_graph
from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, greedy
from zoo_core.export import export_graph
from zoo_core.parity import _session
from zoo_core.predict import predict
from zoo_core.seq_metrics import corpus_bleu
from zoo_core.text import BOS, EOS, PAD
from zoo_core.workflows import export, finished_run, load_run_model, run_graphs, train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "tools" / "d2l-reference"
SENTENCES = {"go .": "va !", "i lost .": "j'ai perdu .", "he's calm .": "il est calme .",
             "i'm home .": "je suis chez moi ."}  # the book's four (d2l §10.7.6)
TARGET_RATIO = 3.0
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
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode
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
import time
model.train(); epoch()
cpu = time.process_time()
for _ in range(CPU_EPOCHS):
    epoch()
cpu_ms = (time.process_time() - cpu) / CPU_EPOCHS / len(batches) * 1e3
with FlopCounterMode(display=False) as fc:
    epoch()
with profile() as p:
    epoch()
ops = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
total = sum(e.self_cpu_time_total for e in ops)
print(json.dumps({"gflop_per_epoch": round(fc.get_total_flops() / 1e9, 2), "steps": len(batches),
                  "cpu_ms_per_step": round(cpu_ms, 1),
                  "self_cpu_ms_per_step": round(total / 1e3 / len(batches), 1),
                  "top_ops_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / len(batches), 1)
                                                   for e in ops[:10]}}))
"""


def profile_sides(reference: str, data, threads: int) -> dict:
    """Training steps of each side at `threads` threads: CPU time per step over `CPU_EPOCHS` epochs (process time,
    which a busy machine's time-slicing does not inflate as it does wall time), FLOPs of one epoch
    (FlopCounterMode), and the operators taking the most self CPU time in one epoch (torch.profiler), per step. The
    zoo: its packed training loss and its forward pass (the book's computation) on the same batches; the reference:
    its own classes in its own environment."""
    from torch.profiler import profile
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo_core.get_model(NAME, preset="book").train()
    src, tgt_in, valid, tgt_out = data.splits()["train"]
    batches = [tuple(t[i:i + 128] for t in (src, tgt_in, valid, tgt_out)) for i in range(0, len(src), 128)]
    opt = model.configure_optimizers()
    result = {}
    for name, loss_fn in (("zoo_packed_loss", model.packed_loss),
                          ("zoo_forward_pass", lambda b: model.loss(model(*b[:3]), b[3]))):
        def epoch():
            for b in batches:
                opt.zero_grad()
                loss_fn(b).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1)
                opt.step()
        epoch()
        cpu = time.process_time()
        for _ in range(CPU_EPOCHS):
            epoch()
        cpu_ms = (time.process_time() - cpu) / CPU_EPOCHS / len(batches) * 1e3
        with FlopCounterMode(display=False) as fc:
            epoch()
        with profile() as p:
            epoch()
        ops = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        result[name] = {"gflop_per_epoch": round(fc.get_total_flops() / 1e9, 2), "steps": len(batches),
                        "cpu_ms_per_step": round(cpu_ms, 1),
                        "self_cpu_ms_per_step": round(total / 1e3 / len(batches), 1),
                        "top_ops_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / len(batches), 1)
                                                         for e in ops[:10]}}
    if reference:
        tool = Path(reference).resolve().parent / "d2l_reference.py"
        venv = Path(os.environ.get("D2L_VENV", "/tmp/d2l-ref-venv")) / "bin" / "python"
        script = REFERENCE_PROFILE.replace("CPU_EPOCHS", str(CPU_EPOCHS))
        proc = subprocess.run([str(venv), "-c", script, str(tool), os.environ.get("ZOO_DATA", "")],
                              capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise SystemExit(f"the reference profile failed: {proc.stderr[-2000:]}")
        result["reference"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def zoo_run(data, seed: int, epochs: int, threads: int, out: Path, kv_repeats: int) -> dict:
    quiet = lambda line: None  # noqa: E731
    run_dir = train(NAME, epochs=epochs, seed=seed, threads=threads, out=out, log=quiet)
    spec, run_dir, manifest = finished_run(NAME, str(run_dir), out)
    export(NAME, run=str(run_dir), out=out, log=quiet)
    spec, run_dir, manifest = finished_run(NAME, str(run_dir), out)
    onnx = manifest["onnx"]["graphs"]
    parity = {name: g["parity"]["CPUExecutionProvider"]["passed"] for name, g in onnx.items()}
    model = load_run_model(spec, run_dir, manifest)
    refs4 = list(SENTENCES.values())
    # the book's four sentences through zoo predict: greedy on both runtimes, beam 4 on both
    answers = {(rt, beam): predict(NAME, list(SENTENCES), run=str(run_dir), out=out, runtime=rt, beam=beam,
                                   references=refs4, note=quiet).results
               for rt in ("torch", "onnx") for beam in (1, 4)}
    sentences = {f"{'greedy' if beam == 1 else 'beam4'}_{rt}": [[r["input"], r["translation"], round(r["bleu"], 3)]
                                                               for r in answers[(rt, beam)]]
                 for rt, beam in answers}
    # every validation sentence, greedy and beam 4, PyTorch against ONNX Runtime
    graphs = run_graphs(spec, manifest, model)
    files = {n: run_dir / g["file"] for n, g in onnx.items()}
    runners = TorchRunner(model, graphs), OnnxRunner(files, graphs)
    src, _, valid, tgt_out = data.splits()["val"]
    tgt_vocab = data.tgt_vocab
    bos, eos, pad = tgt_vocab[BOS], tgt_vocab[EOS], tgt_vocab[PAD]
    first = torch.full((len(src),), bos)
    refs = [" ".join(tgt_vocab.to_tokens([t for t in row if t not in (eos, pad)])) for row in tgt_out.tolist()]
    identical, bleus = {}, {}
    for beam in (1, 4):
        found = [greedy(r, r.start(src, valid), first, data.num_steps, eos) if beam == 1 else
                 beam_search(r, r.start(src, valid), first, data.num_steps, beam, eos) for r in runners]
        identical[f"beam{beam}"] = f"{sum(a == b for a, b in zip(*found))}/{len(src)}"
        bleus[f"val_corpus_bleu_beam{beam}"] = round(corpus_bleu(
            [" ".join(tgt_vocab.to_tokens(ids)) for ids in found[1]], refs), 2)
    with tempfile.TemporaryDirectory() as tmp:
        kv = kv_cache_speed(model, data, files, Path(tmp), kv_repeats)
    record = manifest["train"]
    return {"train_tgt_tokens_per_s": record["tokens_per_s"], "train_seconds": record["seconds"],
            "train_tgt_tokens": record["tokens"], "threads": torch.get_num_threads(),
            "val_loss_causal": round(val_masked_ce(model, data), 4),
            "val_loss_leaky_books_way": round(val_masked_ce(model, data, leaky=True), 4),
            "sentences": sentences, **bleus,
            "predict_onnx_equals_torch": {f"beam{b}": answers[("onnx", b)] == answers[("torch", b)] for b in (1, 4)},
            "onnx_identical_to_torch": identical, "onnx_parity_passed": parity, "kv_cache_onnx": kv,
            "run": run_dir.name}


def reference_run(command: str, seed: int, epochs: int, threads: str) -> dict:
    env = {**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")}
    env.pop("OMP_NUM_THREADS", None)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    args = [command, NAME, "--epochs", str(epochs), "--seed", str(seed)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=7200, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["command"] = ("" if threads == "default" else f"OMP_NUM_THREADS={threads} ") + " ".join(args)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--reference-threads", default="same", help="'same' (as --threads) or 'default' (torch's)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command ('' to skip)")
    parser.add_argument("--kv-repeats", type=int, default=30, help="timed runs of each decoder for the cache ratio")
    parser.add_argument("--profile", action="store_true", help="also profile one epoch of each side")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transformer_cpu.json"))
    args = parser.parse_args()
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # "forgot to detokenize?": the book's tokens, on purpose
    ref_threads = str(args.threads) if args.reference_threads == "same" else args.reference_threads
    load_before = os.getloadavg()
    data = zoo_core.get_data(NAME, preset="book")
    data.splits()
    use_reference = bool(args.reference) and Path(args.reference).exists()
    zoo, ref = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            zoo.append(zoo_run(data, i, args.epochs, args.threads, Path(tmp), args.kv_repeats))
            print(f"zoo run {i + 1}: {json.dumps(zoo[-1])}", flush=True)
            if use_reference:
                ref.append(reference_run(args.reference, i, args.epochs, ref_threads))
                print(f"reference run {i + 1}: {json.dumps(ref[-1])}", flush=True)

    profiled = profile_sides(args.reference if use_reference else "", data, args.threads) if args.profile else None

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {
        "benchmark": f"transformer, book preset, {args.epochs} epochs on CPU, the zoo and the d2l reference "
                     f"alternating",
        "epochs": args.epochs, "seeds": list(range(args.repeat)),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "zoo": {"train_tgt_tokens_per_s_median": round(median(zoo, "train_tgt_tokens_per_s"), 1),
                "val_loss_causal_median": round(median(zoo, "val_loss_causal"), 4),
                "val_loss_leaky_books_way_median": round(median(zoo, "val_loss_leaky_books_way"), 4),
                "kv_cache_speedup_median": statistics.median(z["kv_cache_onnx"]["speedup"] for z in zoo),
                "threads": args.threads, "runs": zoo},
    }
    if ref:
        result["reference"] = {"train_tgt_tokens_per_s_median": round(median(ref, "train_tgt_tokens_per_s"), 1),
                               "val_loss_leaky_median": round(median(ref, "val_loss"), 4), "threads": ref_threads,
                               "runs": ref}
        ratio = result["zoo"]["train_tgt_tokens_per_s_median"] / result["reference"]["train_tgt_tokens_per_s_median"]
        bleu_at_least = {kind: [all(z[2] >= r[2] - 1e-3 for z, r in zip(zr["sentences"][kind], rr["sentences"]))
                                for zr, rr in zip(zoo, ref)]
                         for kind in ("greedy_torch", "beam4_onnx")}
        result.update(speed_ratio=round(ratio, 2), target_ratio=TARGET_RATIO, meets_speed_target=ratio >= TARGET_RATIO,
                      bleu_at_least_reference_on_each_sentence_per_seed=bleu_at_least)
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    if profiled:
        result["profile"] = profiled
        if "reference" in profiled:
            result["cpu_time_per_step_ratio"] = round(profiled["reference"]["cpu_ms_per_step"]
                                                      / profiled["zoo_packed_loss"]["cpu_ms_per_step"], 2)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
