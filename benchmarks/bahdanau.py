"""bahdanau (d2l §11.4), the book's recipe, with the zoo and with the book's own code (d2l 1.0.3), in the same run.

    ZOO_DATA=../shared/data python benchmarks/bahdanau.py [--epochs 30] [--repeat 1] [--threads 1]

The pattern of benchmarks/seq2seq.py, for chapter 11's GRU encoder-decoder with additive attention. The zoo side is
what a user runs, in this process: ``zoo train bahdanau --threads T --seed i`` (`zoo_core.workflows.train`), ``zoo
export bahdanau --onnx`` (``encoder.onnx``, ``decoder_step.onnx``, ``model.onnx``, each with its ONNX Runtime parity),
``zoo predict bahdanau SENTENCE...`` on both runtimes. The reference is ``d2l-reference bahdanau`` (``--reference
CMD``; default ``../shared/tools/d2l-reference``) in its own process with ``OMP_NUM_THREADS=T``, the same thread
count. Repetition i trains both with seed i, the zoo first, alternately: a busy machine slows both alike. Compared:

- training speed: target tokens per second, the non-pad labels of the batches trained (both sides count the same
  2,136 an epoch), over training time only (validation excluded). The target is 3x the reference.
- quality: the validation masked cross-entropy over every non-pad validation token (token-weighted, as the reference
  computes it), at most the reference's; the book's four sentences translated greedily and their BLEU (k=2), at least
  the reference's on each; for the zoo, the corpus BLEU (sacreBLEU, tokenize "none") of the 129 validation sentences,
  greedy and beam 4.
- generation on ONNX Runtime: greedy and beam search (4) on the exported graphs give PyTorch's tokens for every
  validation sentence; `zoo predict` answers the same on both runtimes.
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

import torch

from _common import write_result
import zoo_core
from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, greedy
from zoo_core.predict import predict
from zoo_core.seq_metrics import bleu, corpus_bleu
from zoo_core.text import BOS, EOS, PAD
from zoo_core.workflows import export, finished_run, load_run_model, run_graphs, train

MODEL = "bahdanau"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "tools" / "d2l-reference"
SENTENCES = {"go .": "va !", "i lost .": "j'ai perdu .", "he's calm .": "il est calme .",
             "i'm home .": "je suis chez moi ."}  # the book's four (d2l §10.7.6)
TARGET_RATIO = 3.0
VAL_LOSS_MARGIN = 1.0  # the zoo's validation CE at most the reference's; BLEU at least the reference's


def val_masked_ce(model, data) -> float:
    """The masked cross-entropy over all non-pad validation tokens, from the book's forward pass (eval mode)."""
    src, tgt_in, valid, tgt_out = data.splits()["val"]
    model.eval()
    with torch.no_grad():
        logits = model(src, tgt_in, valid)
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                               reduction="none")
    mask = tgt_out.reshape(-1) != model.tgt_pad
    return float(losses[mask].sum() / mask.sum())


def zoo_run(data, seed: int, epochs: int, threads: int, out: Path) -> dict:
    run_dir = train(MODEL, epochs=epochs, seed=seed, threads=threads, out=out, log=lambda line: None)
    spec, run_dir, manifest = finished_run(MODEL, str(run_dir), out)
    export(MODEL, run=str(run_dir), out=out, log=lambda line: None)
    spec, run_dir, manifest = finished_run(MODEL, str(run_dir), out)
    onnx = manifest["onnx"]["graphs"]
    parity = {name: g["parity"]["CPUExecutionProvider"]["passed"] for name, g in onnx.items()}
    model = load_run_model(spec, run_dir, manifest)
    # the book's four sentences through zoo predict, greedy, on both runtimes
    answers = {rt: predict(MODEL, list(SENTENCES), run=str(run_dir), out=out, runtime=rt,
                           references=list(SENTENCES.values()), note=lambda line: None).results
               for rt in ("torch", "onnx")}
    sentences = [[r["input"], r["translation"], round(r["bleu"], 3)] for r in answers["torch"]]
    # every validation sentence, greedy and beam 4, PyTorch against ONNX Runtime
    graphs = run_graphs(spec, manifest, model)
    runners = TorchRunner(model, graphs), OnnxRunner({n: run_dir / g["file"] for n, g in onnx.items()}, graphs)
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
            [" ".join(tgt_vocab.to_tokens(ids)) for ids in found[0]], refs), 2)
    record = manifest["train"]
    return {"train_tgt_tokens_per_s": record["tokens_per_s"], "train_seconds": record["seconds"],
            "train_tgt_tokens": record["tokens"], "threads": torch.get_num_threads(),
            "val_loss": round(val_masked_ce(model, data), 4), "sentences": sentences,
            "predict_onnx_equals_torch": answers["onnx"] == answers["torch"], **bleus,
            "onnx_identical_to_torch": identical, "onnx_parity_passed": parity, "run": run_dir.name}


def reference_run(command: str, seed: int, epochs: int, threads: str) -> dict:
    env = {**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")}
    env.pop("OMP_NUM_THREADS", None)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    args = [command, MODEL, "--epochs", str(epochs), "--seed", str(seed)]
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
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bahdanau_cpu.json"))
    args = parser.parse_args()
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # "forgot to detokenize?": the book's tokens, on purpose
    ref_threads = str(args.threads) if args.reference_threads == "same" else args.reference_threads
    load_before = os.getloadavg()
    data = zoo_core.get_data(MODEL, preset="book")
    data.splits()
    use_reference = bool(args.reference) and Path(args.reference).exists()
    zoo, ref = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            zoo.append(zoo_run(data, i, args.epochs, args.threads, Path(tmp)))
            print(f"zoo run {i + 1}: {json.dumps(zoo[-1])}", flush=True)
            if use_reference:
                ref.append(reference_run(args.reference, i, args.epochs, ref_threads))
                print(f"reference run {i + 1}: {json.dumps(ref[-1])}", flush=True)

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {
        "benchmark": f"{MODEL}, book preset, {args.epochs} epochs on CPU, the zoo and the d2l reference alternating",
        "epochs": args.epochs, "seeds": list(range(args.repeat)),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "zoo": {"train_tgt_tokens_per_s_median": round(median(zoo, "train_tgt_tokens_per_s"), 1),
                "val_loss_median": round(median(zoo, "val_loss"), 4), "threads": args.threads, "runs": zoo},
    }
    if ref:
        result["reference"] = {"train_tgt_tokens_per_s_median": round(median(ref, "train_tgt_tokens_per_s"), 1),
                               "val_loss_median": round(median(ref, "val_loss"), 4), "threads": ref_threads,
                               "runs": ref}
        ratio = result["zoo"]["train_tgt_tokens_per_s_median"] / result["reference"]["train_tgt_tokens_per_s_median"]
        bleu_at_least = [all(z[2] >= r[2] - 1e-3 for z, r in zip(zr["sentences"], rr["sentences"]))
                         for zr, rr in zip(zoo, ref)]
        result.update(
            speed_ratio=round(ratio, 2), target_ratio=TARGET_RATIO, meets_speed_target=ratio >= TARGET_RATIO,
            val_loss_at_most_reference=result["zoo"]["val_loss_median"] <= VAL_LOSS_MARGIN * result["reference"][
                "val_loss_median"],
            bleu_at_least_reference_on_each_sentence_per_seed=bleu_at_least)
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    write_result(args.out, result)


if __name__ == "__main__":
    main()
