"""A language model's run end to end through the CLI: vocabularies saved and hashed, data-decided hyper-parameters,
tokens/s and perplexity in the manifest, one ONNX file per graph, verify, predict on both runtimes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from zoo_core.artifacts import read_manifest
from zoo_core.text import Vocab


def run_zoo(*args: str) -> subprocess.CompletedProcess:
    """``python -m zoo_core ARGS`` in a fresh process, as a user's shell runs it."""
    return subprocess.run([sys.executable, "-m", "zoo_core", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    trained = run_zoo("train", "rnn-lm", "--preset", "tiny", "--max-steps", "3", "--out", str(out), "--threads", "1")
    assert trained.returncode == 0, trained.stderr
    run = out / "rnn-lm" / trained.stdout.splitlines()[-1].rsplit("/", 1)[-1]
    exported = run_zoo("export", "rnn-lm", "--onnx", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    return out, run, exported


def test_a_text_run_keeps_its_vocabulary_hashed(lm_run):
    _, run, _ = lm_run
    manifest = read_manifest(run)
    assert manifest["vocabs"] == {"vocab": "vocab.json"}
    assert "vocab.json" in manifest["files"] and len(manifest["files"]["vocab.json"]["sha256"]) == 64
    vocab = Vocab.load(run / "vocab.json")
    assert len(vocab) == manifest["hparams"]["vocab_size"] == 28


def test_sequence_runs_report_perplexity_and_tokens_per_second(lm_run):
    _, run, _ = lm_run
    manifest = read_manifest(run)
    metrics, train = manifest["metrics"], manifest["train"]
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-5)
    data = manifest["data"]["hparams"]
    assert train["tokens"] == 3 * data["batch_size"] * data["num_steps"] and train["tokens_per_s"] > 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["tokens_per_s"] > 0


def test_export_writes_one_file_per_graph_and_verify_checks_each(lm_run):
    out, run, exported = lm_run
    graphs = read_manifest(run)["onnx"]["graphs"]
    assert set(graphs) == {"model", "step"}
    assert exported.stdout.split() == [str(run / graphs[g]["file"]) for g in graphs]
    forward = graphs["model"]
    assert forward["inputs"][0]["shape"] == ["batch", "seq"]
    cpu = forward["parity"]["CPUExecutionProvider"]
    assert cpu["passed"] and cpu["dims"]["seq"] != forward["trace_dims"]["seq"]
    assert graphs["step"]["state"] == ["H"]
    verified = run_zoo("verify", "rnn-lm", "--out", str(out))
    assert verified.returncode == 0, verified.stderr
    for g in graphs.values():
        assert f"ok    onnx parity {g['file']}: CPUExecutionProvider" in verified.stdout


def test_predict_continues_a_prefix_the_same_on_both_runtimes(lm_run):
    out, _, _ = lm_run
    answers = [run_zoo("predict", "rnn-lm", "time traveller", "--num-preds", "12", "--beam", "2", "--json",
                       "--runtime", runtime, "--out", str(out)) for runtime in ("torch", "onnx")]
    for answer in answers:
        assert answer.returncode == 0, answer.stderr
    torch_out, onnx_out = (json.loads(a.stdout) for a in answers)
    assert torch_out["results"] == onnx_out["results"]
    assert torch_out["results"][0]["text"].startswith("time traveller")
    assert len(torch_out["results"][0]["tokens"]) == 12


def test_data_decided_hyperparameters_follow_set(tmp_path):
    """``--set token=word`` changes the vocabulary: the model is built for it, and its graphs export at its size."""
    trained = run_zoo("train", "rnn-lm", "--preset", "tiny", "--max-steps", "1", "--set", "token=word",
                      "--out", str(tmp_path), "--threads", "1")
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "rnn-lm" / trained.stdout.splitlines()[-1].rsplit("/", 1)[-1]
    manifest = read_manifest(run)
    words = len(Vocab.load(run / "vocab.json"))
    assert words != 28 and manifest["hparams"]["vocab_size"] == words
    exported = run_zoo("export", "rnn-lm", "--onnx", "--out", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    step = read_manifest(run)["onnx"]["graphs"]["step"]
    assert step["outputs"][0]["shape"] == ["batch", words]
