"""A run's record is always true: whatever ends `zoo train` early leaves its manifest `failed` (or `interrupted`) with
the error in one line, checks that can run before training do, and a full disk is one line naming the file, with no
temporary file left behind. `zoo export`/`zoo verify` then say what happened to the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors

from zoo_core.artifacts import read_manifest

TINY = ("--preset", "tiny", "--device", "cpu", "--threads", "1")


def only_run(out: Path, model: str) -> Path:
    runs = list((out / model).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def error_after_progress(result, *fragments: str) -> str:
    """The CLI failed after training a while: progress lines, then exactly one error line naming `fragments`."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr_lines if line.startswith("zoo: ")]
    assert len(errors) == 1 and result.stderr_lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in: {errors[0]}"
    return errors[0]


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*"))


def test_labels_a_classifier_cannot_score_are_a_user_error_before_the_first_step(cli, tmp_path):
    """`--set num_outputs=5` on 10-class data: one line naming both sizes (not `IndexError: Target 8 is out of
    bounds` at some step), no step taken, and the run marked failed."""
    result = cli("train", "softmax", *TINY, "--set", "num_outputs=5", "--out", str(tmp_path))
    result.assert_one_line_error("the training labels run from 0 to 9", "SoftmaxRegression scores 5 classes",
                                 "--set num_outputs=10")
    run = only_run(tmp_path, "softmax")
    manifest = read_manifest(run)
    assert manifest["status"] == "failed" and manifest["error"] == result.stderr.removeprefix("zoo: error: ").strip()
    assert not (run / "checkpoint").exists() and not (run / "metrics.jsonl").exists()  # before the first step

    for command in ("export", "verify"):
        said = cli(command, "softmax", "--run", str(run))
        said.assert_one_line_error(f"run {run} failed: the training labels run from 0 to 9")
        assert "--resume" not in said.stderr
    cli("export", "softmax", "--out", str(tmp_path)).assert_one_line_error(
        "no finished run of softmax", f"the newest, {run.name}, is failed: the training labels")


def test_the_label_check_reads_labels_once_not_per_step(monkeypatch, tmp_path):
    """The check costs one forward pass on two examples and one label range per split, whatever the epoch count."""
    import torch

    from zoo_core import Trainer, get_data, get_model

    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t, *a, **k: calls.append(t.shape) or real(t, *a, **k))
    model, data = get_model("softmax", preset="tiny"), get_data("softmax", preset="tiny")
    result = Trainer(max_epochs=3, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    assert result.steps == 3 * 8  # 256 examples in batches of 32, three epochs
    assert calls == [(256,), (64,)]  # training labels, validation labels: once each


def test_any_error_during_training_marks_the_run_failed(cli, tmp_path, monkeypatch):
    """Not only Ctrl-C and NaN: an internal error (a bug) mid-training leaves `failed` and the error's type."""
    from zoo_core.trainer import Trainer

    def broken_fit(self, model, data, ckpt_path=None):
        raise RuntimeError("a bug in the training loop")

    monkeypatch.setattr(Trainer, "fit", broken_fit)
    result = cli("train", "softmax", *TINY, "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr_lines == ["zoo: internal error: RuntimeError: a bug in the training loop (rerun with "
                                   "--debug for the traceback)"]
    manifest = read_manifest(only_run(tmp_path, "softmax"))
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: a bug in the training loop"


def test_a_run_without_checkpoint_is_not_sent_to_resume(cli, tmp_path):
    """A run left `running` (a killed process) with no checkpoint: export says to train anew, not `--resume`."""
    trained = cli("train", "softmax", *TINY, "--epochs", "1", "--out", str(tmp_path))
    assert trained.returncode == 0, trained.stderr
    run = only_run(tmp_path, "softmax")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(manifest))
    cli("export", "softmax", "--run", str(run)).assert_one_line_error(
        "did not finish (status running); continue it with `zoo train softmax --resume")
    import shutil

    shutil.rmtree(run / "checkpoint")
    cli("export", "softmax", "--run", str(run)).assert_one_line_error(
        "did not finish (status running); it has no checkpoint to continue from: train anew with `zoo train softmax`")


def test_house_prices_without_pandas_fails_before_training(cli, tmp_path, monkeypatch):
    """pandas writes the submission: its absence is found before the first fold, not after the final fit."""
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    result = cli("train", "house-prices", *TINY, "--out", str(tmp_path))
    result.assert_one_line_error("house-prices reads its tables with pandas", "pip install 'zoo-mlp[house]'")
    assert not (tmp_path / "house-prices").exists()  # no run folder: nothing was trained


def test_manifest_inputs_and_outputs_follow_set(cli, tmp_path):
    """`--set num_outputs=12` trains a 12-way softmax: the manifest's outputs say so (not the card's 10), as its
    ONNX graph does."""
    trained = cli("train", "softmax", "--preset", "tiny", "--device", "cpu", "--epochs", "1", "--set",
                  "num_outputs=12", "--out", str(tmp_path))
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "softmax" / trained.stdout.strip().rsplit("/", 1)[-1]
    manifest = read_manifest(run)
    assert manifest["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 12]}]
    assert manifest["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    exported = cli("export", "softmax", "--onnx", "--run", str(run))
    assert exported.returncode == 0, exported.stderr
    graph = read_manifest(run)["onnx"]["graphs"]["model"]
    assert (graph["inputs"], graph["outputs"]) == (manifest["inputs"], manifest["outputs"])


# --- a full disk ------------------------------------------------------------------------------------------------------

def test_a_full_disk_in_safetensors_is_one_line_naming_the_file(cli, tmp_path, monkeypatch):
    """safetensors wraps ENOSPC in its own error ("I/O error: No space left on device (os error 28)"): the user
    sees one line naming the file, the checkpoint's temporary folder is gone and the run is failed."""
    import safetensors.torch

    real = safetensors.torch.save_model
    writes = []

    def save_model(model, filename, metadata=None):
        writes.append(filename)
        if len(writes) == 2:  # the first epoch's checkpoint is written; the second one meets a full disk
            Path(filename).write_bytes(b"\0" * 100)  # a partial file, as a real full disk leaves
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device "
                                              "(os error 28)")
        return real(model, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)
    result = cli("train", "softmax", *TINY, "--epochs", "3", "--out", str(tmp_path))
    run = only_run(tmp_path, "softmax")
    error_after_progress(result, f"no space left on device writing {run}/checkpoint/model.safetensors")
    assert "SafetensorError" not in result.stderr and "internal error" not in result.stderr
    assert f"continue with: zoo train softmax --resume {run}" in result.stderr  # epoch 1's checkpoint is whole
    assert hidden_files(run) == []
    manifest = read_manifest(run)
    assert manifest["status"] == "failed" and manifest["error"].startswith("no space left on device writing")
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["epoch"] == 1


def test_a_full_disk_in_plain_file_writes_is_one_line_naming_the_file(cli, tmp_path, monkeypatch):
    """ENOSPC from Python's own file I/O (metrics.jsonl here) names the file the zoo was writing."""
    import errno
    import os

    def full(path, records):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("zoo_core.trainer.write_jsonl", full)
    result = cli("train", "softmax", *TINY, "--epochs", "1", "--out", str(tmp_path))
    run = only_run(tmp_path, "softmax")
    error_after_progress(result, f"no space left on device writing {run}/metrics.jsonl")
    assert read_manifest(run)["status"] == "failed"


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


@pytest.mark.parametrize("model", ["alexnet", "softmax"])
def test_a_real_full_disk(zoo, tmp_path, model):
    """Training into a 48 kB tmpfs (the issue's input): alexnet's first checkpoint does not fit; softmax's fits, and
    then its metrics do not. One line naming the file, no temporary file left, and the run marked failed even when
    not one more block is free (the manifest is then rewritten in its own blocks)."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "48k")
    try:
        result = zoo("train", model, *TINY, "--epochs", "2", "--out", str(disk))
        run = only_run(disk, model)
        line = error_after_progress(result, f"no space left on device writing {run}/")
        written = Path(line.split(" writing ")[1].split(":")[0])
        assert written.name in ("model.safetensors", "state.pt", "checkpoint.json", "metrics.jsonl", "curves.png",
                                "manifest.json") and not written.name.startswith(".")
        assert "could not be updated" not in line
        assert hidden_files(run) == [], "temporary files were left behind"
        manifest = read_manifest(run)
        assert manifest["status"] == "failed" and manifest["error"] == line.removeprefix("zoo: error: ").split(
            "; continue with")[0]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
