"""The zoo against the book's own code (d2l 1.0.3) on a translation model, the driver that benchmarks/seq2seq.py,
bahdanau.py and transformer.py share; each script keeps its docstring (the commands and what it compares), its model
and its own measurements.

- the arguments every one takes (`arguments`): epochs, repetitions, threads of each side, the reference command, the
  zoo's ``--precision`` (32 or bf16: the reference trains in float32 either way), the result file;
- the alternating runs (`alternate`): repetition i trains the zoo with seed i in this process, then the reference
  (``d2l-reference MODEL --epochs N --seed i``, `reference_run`) in its own with ``OMP_NUM_THREADS=T``, so that a
  busy machine slows both alike;
- the zoo's run as a user makes it (`train_and_export`: ``zoo train``, ``zoo export --onnx``; `book_sentences`: ``zoo
  predict`` on the book's four sentences; `validation_decoding`: greedy and beam 4 over every validation sentence on
  PyTorch and ONNX Runtime; `training_figures`), and the whole per-run record of the recurrent models
  (`recurrent_zoo_run`);
- the record (`summary`): medians of each side, the speed ratio against the 3x target; `recurrent_main` is all of
  seq2seq's and bahdanau's main.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from _common import write_result
import zoo_core
from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, greedy
from zoo_core.predict import predict
from zoo_core.seq_metrics import corpus_bleu
from zoo_core.text import BOS, EOS, PAD
from zoo_core.workflows import export, finished_run, load_run_model, run_graphs, train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "tools" / "d2l-reference"
SENTENCES = {"go .": "va !", "i lost .": "j'ai perdu .", "he's calm .": "il est calme .",
             "i'm home .": "je suis chez moi ."}  # the book's four (d2l §10.7.6)
TARGET_RATIO = 3.0
RUNTIMES = ("torch", "onnx")


def quiet(line: str) -> None:
    """A log that drops the workflows' progress lines: the benchmark prints its own record."""


def arguments(doc: str, name: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
              ) -> argparse.Namespace:
    """The command line every translation benchmark takes (and `extra`'s options, if any); the result file defaults
    to ``benchmarks/results/NAME_cpu.json``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--reference-threads", default="same", help="'same' (as --threads) or 'default' (torch's)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="d2l-reference command ('' to skip)")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32",
                        help="the zoo's ``zoo train --precision`` (the reference trains in float32 either way)")
    parser.add_argument("--rng", choices=("zoo", "book"), default="zoo",
                        help="the zoo's ``zoo train --rng``: book replays the reference's random stream at each seed "
                             "(seq2seq only among the translation models)")
    if extra:
        extra(parser)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"{name}_cpu.json"))
    return parser.parse_args()


def reference_run(command: str, name: str, seed: int, epochs: int, threads: str) -> dict[str, Any]:
    """One run of the d2l-reference tool: its last stdout line (a JSON record), with the command that made it."""
    env = {**os.environ, "ZOO_DATA": os.environ.get("ZOO_DATA", "")}
    env.pop("OMP_NUM_THREADS", None)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    args = [command, name, "--epochs", str(epochs), "--seed", str(seed)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=7200, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["command"] = ("" if threads == "default" else f"OMP_NUM_THREADS={threads} ") + " ".join(args)
    return out


@dataclass
class Runs:
    """What `alternate` gives: the book-preset data, each side's per-run records, the reference's thread setting,
    and the load and clock when the runs began (the summary's "before" and its wall time start there)."""

    args: argparse.Namespace
    data: Any
    zoo: list[dict[str, Any]]
    ref: list[dict[str, Any]]
    ref_threads: str
    used_reference: bool
    load_before: float
    started: float


def alternate(name: str, args: argparse.Namespace, zoo_run: Callable[[Any, int, Path], dict[str, Any]]) -> Runs:
    """Repetition i: ``zoo_run(data, i, folder)`` (its runs in a temporary folder), then the reference with seed i,
    each record printed as it comes."""
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # "forgot to detokenize?": the book's tokens, on purpose
    ref_threads = str(args.threads) if args.reference_threads == "same" else args.reference_threads
    load_before = os.getloadavg()[0]
    data = zoo_core.get_data(name, preset="book")
    data.splits()  # built before any clock starts
    use_reference = bool(args.reference) and Path(args.reference).exists()
    runs = Runs(args, data, [], [], ref_threads, use_reference, load_before, time.perf_counter())
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs.zoo.append(zoo_run(data, i, Path(tmp)))
            print(f"zoo run {i + 1}: {json.dumps(runs.zoo[-1])}", flush=True)
            if use_reference:
                runs.ref.append(reference_run(args.reference, name, i, args.epochs, ref_threads))
                print(f"reference run {i + 1}: {json.dumps(runs.ref[-1])}", flush=True)
    return runs


def median(runs: list[dict[str, Any]], key: str) -> float:
    """The median of `key` over a side's per-run records."""
    return statistics.median(r[key] for r in runs)


def summary(name: str, runs: Runs, zoo_medians: dict[str, Any],
            ref_medians: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> dict[str, Any]:
    """The record's head, each side's median speed (with `zoo_medians` and, when the reference ran,
    ``ref_medians(runs)``), its threads and runs, and the speed ratio against the target. Wall time and the load
    "after" are read here, so that whatever ran after the runs (a profile) counts in them."""
    args = runs.args
    result = {
        "benchmark": f"{name}, book preset, {args.epochs} epochs on CPU, the zoo and the d2l reference alternating"
                     + ("" if args.precision == "32" else f"; the zoo trains with --precision {args.precision}")
                     + ("" if args.rng == "zoo" else "; the zoo replays the reference's random stream (--rng book)"),
        "epochs": args.epochs, "seeds": list(range(args.repeat)),
        "load_average_1min": {"before": round(runs.load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - runs.started, 1),
        "zoo": {"train_tgt_tokens_per_s_median": round(median(runs.zoo, "train_tgt_tokens_per_s"), 1),
                **zoo_medians, "threads": args.threads, "precision": args.precision, "rng": args.rng,
                "runs": runs.zoo},
    }
    if runs.ref:
        result["reference"] = {"train_tgt_tokens_per_s_median": round(median(runs.ref, "train_tgt_tokens_per_s"), 1),
                               **ref_medians(runs.ref), "threads": runs.ref_threads, "runs": runs.ref}
        ratio = result["zoo"]["train_tgt_tokens_per_s_median"] / result["reference"]["train_tgt_tokens_per_s_median"]
        result.update(speed_ratio=round(ratio, 2), target_ratio=TARGET_RATIO, meets_speed_target=ratio >= TARGET_RATIO)
    else:
        result["reference"] = f"not run: no d2l-reference command at {args.reference!r}"
    return result


def bleu_at_least(zoo: list[list[Any]], ref: list[list[Any]]) -> bool:
    """Whether the zoo's BLEU is at least the reference's on each of the book's sentences ([input, translation,
    BLEU] rows; the reference prints its BLEU to 3 decimals)."""
    return all(z[2] >= r[2] - 1e-3 for z, r in zip(zoo, ref))


@dataclass
class ZooRun:
    """A finished, exported zoo run, reloaded as `zoo_core.predict` and the decoders see it."""

    spec: Any
    dir: Path
    manifest: dict[str, Any]
    model: torch.nn.Module
    files: dict[str, Path]  # the exported ONNX graphs by name
    parity: dict[str, bool]  # each graph's ONNX Runtime parity check (CPU)


def train_and_export(name: str, seed: int, epochs: int, threads: int, out: Path, precision: str = "32",
                     rng: str = "zoo") -> ZooRun:
    """``zoo train NAME --epochs E --seed S --threads T --precision P --rng R`` then ``zoo export NAME --onnx``, as a
    user runs them."""
    run_dir = train(name, epochs=epochs, seed=seed, threads=threads, precision=precision, rng=rng, out=out,
                    log=quiet)
    spec, run_dir, manifest = finished_run(name, str(run_dir), out)
    export(name, run=str(run_dir), out=out, log=quiet)
    spec, run_dir, manifest = finished_run(name, str(run_dir), out)  # again: the export adds its graphs
    onnx = manifest["onnx"]["graphs"]
    return ZooRun(spec, run_dir, manifest, load_run_model(spec, run_dir, manifest),
                  {n: run_dir / g["file"] for n, g in onnx.items()},
                  {n: g["parity"]["CPUExecutionProvider"]["passed"] for n, g in onnx.items()})


def book_sentences(name: str, run: ZooRun, out: Path, runtime: str, beam: int | None = None) -> list[dict[str, Any]]:
    """``zoo predict NAME SENTENCE... --runtime R [--beam B]`` on the book's four sentences, with their BLEU."""
    return predict(name, list(SENTENCES), run=str(run.dir), out=out, runtime=runtime, beam=beam,
                   references=list(SENTENCES.values()), note=quiet).results


def scored(results: list[dict[str, Any]]) -> list[list[Any]]:
    """`book_sentences`' answers as [input, translation, BLEU] rows, the reference's form."""
    return [[r["input"], r["translation"], round(r["bleu"], 3)] for r in results]


def validation_decoding(data: Any, run: ZooRun, bleu_runtime: str) -> tuple[dict[str, str], dict[str, float]]:
    """Every validation sentence decoded greedily and with beam search (4) on PyTorch and on ONNX Runtime: how many
    give the same tokens on both (per beam), and the corpus BLEU (sacreBLEU on the book's tokens) of `bleu_runtime`'s
    translations."""
    graphs = run_graphs(run.spec, run.manifest, run.model)
    runners = TorchRunner(run.model, graphs), OnnxRunner(run.files, graphs)
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
            [" ".join(tgt_vocab.to_tokens(ids)) for ids in found[RUNTIMES.index(bleu_runtime)]], refs), 2)
    return identical, bleus


def training_figures(run: ZooRun) -> dict[str, Any]:
    """The speed the run's manifest recorded: target tokens per second over training time only."""
    record = run.manifest["train"]
    return {"train_tgt_tokens_per_s": record["tokens_per_s"], "train_seconds": record["seconds"],
            "train_tgt_tokens": record["tokens"], "threads": torch.get_num_threads(), "precision": record["precision"]}


def recurrent_val_loss(model: torch.nn.Module, data: Any) -> float:
    """The masked cross-entropy over all non-pad validation tokens, from the book's forward pass (eval mode)."""
    src, tgt_in, valid, tgt_out = data.splits()["val"]
    model.eval()
    with torch.no_grad():
        logits = model(src, tgt_in, valid)
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                               reduction="none")
    mask = tgt_out.reshape(-1) != model.tgt_pad
    return float(losses[mask].sum() / mask.sum())


def recurrent_zoo_run(name: str, data: Any, seed: int, epochs: int, threads: int, out: Path,
                      precision: str = "32", rng: str = "zoo") -> dict[str, Any]:
    """One zoo run of a GRU encoder-decoder (seq2seq, bahdanau): its speed, validation loss, the book's sentences
    greedily (PyTorch's, and whether ONNX Runtime answers the same), the validation corpus BLEU of PyTorch's
    translations, and the ONNX checks."""
    run = train_and_export(name, seed, epochs, threads, out, precision, rng)
    answers = {rt: book_sentences(name, run, out, rt) for rt in RUNTIMES}
    identical, bleus = validation_decoding(data, run, "torch")
    return {**training_figures(run), "val_loss": round(recurrent_val_loss(run.model, data), 4),
            "sentences": scored(answers["torch"]), "predict_onnx_equals_torch": answers["onnx"] == answers["torch"],
            **bleus, "onnx_identical_to_torch": identical, "onnx_parity_passed": run.parity, "run": run.dir.name}


def recurrent_main(name: str, doc: str, val_loss_check: str, val_loss_margin: float) -> None:
    """seq2seq's and bahdanau's whole benchmark: the alternating runs, then the record, with `val_loss_check` true
    when the zoo's median validation loss is at most `val_loss_margin` times the reference's, and the sentence BLEU
    check per seed."""
    args = arguments(doc, name)
    runs = alternate(name, args, lambda data, seed, out: recurrent_zoo_run(name, data, seed, args.epochs,
                                                                            args.threads, out, args.precision,
                                                                            args.rng))

    def val_loss(side: list[dict[str, Any]]) -> dict[str, float]:
        return {"val_loss_median": round(median(side, "val_loss"), 4)}

    result = summary(name, runs, val_loss(runs.zoo), val_loss)
    if runs.ref:
        result[val_loss_check] = (result["zoo"]["val_loss_median"]
                                  <= val_loss_margin * result["reference"]["val_loss_median"])
        result["bleu_at_least_reference_on_each_sentence_per_seed"] = [
            bleu_at_least(z["sentences"], r["sentences"]) for z, r in zip(runs.zoo, runs.ref)]
    write_result(args.out, result)
