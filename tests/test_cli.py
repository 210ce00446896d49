"""The CLI end to end (train -> export -> verify, resume, damage detection) and its errors: one line each."""

from __future__ import annotations

import json
import platform
import shutil

import pytest
import torch

from zoo_core.artifacts import read_manifest, write_manifest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny softmax run, trained and exported through the real CLI (shared by the tests that only read it)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("artifacts")

    def zoo(*args):
        proc = subprocess.run([sys.executable, "-m", "zoo_core", *args], capture_output=True, text=True,
                              env=dict(os.environ), timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc

    trained = zoo("train", "softmax", "--preset", "tiny", "--epochs", "2", "--out", str(out), "--device", "cpu")
    run = out / "softmax" / trained.stdout.splitlines()[-1].rsplit("/", 1)[-1]
    assert trained.stdout.splitlines()[-1] == str(run)  # the last stdout line is the run directory
    exported = zoo("export", "softmax", "--onnx", "--out", str(out))
    assert exported.stdout.strip() == str(run / "model.onnx")
    return run


def test_train_writes_a_complete_run(run_dir):
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed" and manifest["model"] == "softmax" and manifest["preset"] == "tiny"
    assert manifest["run_id"] == run_dir.name
    assert manifest["hparams"] == {"num_outputs": 10, "lr": 0.1}
    assert manifest["data"]["name"] == "fashion-mnist" and manifest["data"]["hparams"]["synthetic"] is True
    assert {"val_acc", "val_loss", "train_loss"} <= set(manifest["metrics"])
    train = manifest["train"]
    assert train["epochs"] == 2 and train["world_size"] == 1 and train["device"] == "cpu"
    assert train["examples"] == 2 * 256 and train["examples_per_s"] > 0 and train["seconds"] > 0
    assert isinstance(train["denormals_flushed"], bool)
    if platform.machine().lower() in ("x86_64", "amd64"):  # every x86-64 CPU can flush subnormals (FTZ/DAZ)
        assert train["denormals_flushed"]
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["zoo-core"]
    assert manifest["command"].startswith("zoo train softmax --preset tiny")
    assert {"model.safetensors", "metrics.jsonl", "curves.png", "checkpoint/model.safetensors",
            "checkpoint/state.pt", "model.onnx"} <= set(manifest["files"])
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_export_records_onnx_and_parity(run_dir):
    manifest = read_manifest(run_dir)
    assert manifest["onnx"]["opset"] == 18 and manifest["onnx"]["exporter"] == "torch.export (dynamo)"
    assert list(manifest["onnx"]["graphs"]) == ["model"]  # one graph: the forward pass
    onnx = manifest["onnx"]["graphs"]["model"]
    assert onnx["file"] == "model.onnx" and onnx["role"] == "forward"
    assert onnx["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    assert onnx["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]
    cpu = onnx["parity"]["CPUExecutionProvider"]
    assert cpu["passed"] and cpu["max_abs_err"] <= cpu["atol"] and cpu["batch_size"] != onnx["trace_batch_size"]
    assert cpu["top1_agreement"] == 1.0 and cpu["dims"] == {"batch": 3}
    assert "CUDAExecutionProvider" in onnx["parity"]  # run, or skipped with its reason


def test_verify_passes_on_a_good_run(run_dir, cli):
    result = cli("verify", "softmax", "--run", str(run_dir))
    assert result.returncode == 0
    assert "FAIL" not in result.stdout and "all checks passed" in result.stdout
    assert "ok    onnx parity model.onnx: CPUExecutionProvider" in result.stdout


def damaged_copy(run_dir, tmp_path):
    copy = tmp_path / "softmax" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def test_verify_fails_on_a_changed_file(run_dir, tmp_path, cli):
    copy = damaged_copy(run_dir, tmp_path)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write("{}\n")
    result = cli("verify", "softmax", "--run", str(copy))
    result.assert_one_line_error("verification", "sha256 metrics.jsonl")
    assert "FAIL  sha256 metrics.jsonl" in result.stdout


def test_verify_fails_on_corrupt_weights_even_with_a_matching_hash(run_dir, tmp_path, cli):
    copy = damaged_copy(run_dir, tmp_path)
    (copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    write_manifest(copy, read_manifest(copy))  # the hash now matches the garbage
    result = cli("verify", "softmax", "--run", str(copy))
    result.assert_one_line_error("weights load")
    assert "not a readable safetensors file" in result.stdout
    cli("export", "softmax", "--run", str(copy)).assert_one_line_error("not a readable safetensors file")


def test_export_refuses_a_damaged_run(run_dir, tmp_path, cli):
    copy = damaged_copy(run_dir, tmp_path)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    cli("export", "softmax", "--run", str(copy), "--onnx").assert_one_line_error("damaged", "model.safetensors")


def test_resume_continues_the_same_run(tmp_path, zoo):
    out = str(tmp_path)
    first = zoo("train", "linreg", "--preset", "tiny", "--epochs", "1", "--out", out)
    assert first.returncode == 0, first.stderr
    run = first.stdout.splitlines()[-1]
    second = zoo("train", "linreg", "--resume", run, "--epochs", "3", "--out", out)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == run
    assert [json.loads(line)["epoch"] for line in open(f"{run}/metrics.jsonl")] == [1, 2, 3]
    manifest = json.loads(open(f"{run}/manifest.json").read())
    assert manifest["trainer"]["max_epochs"] == 3 and manifest["train"]["epochs"] == 3
    zoo("train", "linreg", "--resume", run, "--lr", "0.5", "--out", out).assert_one_line_error("--resume")
    zoo("train", "linreg", "--resume", run, "--seed", "0", "--out", out).assert_one_line_error("--resume")


def test_unfinished_runs_are_not_exported(run_dir, tmp_path, cli):
    copy = damaged_copy(run_dir, tmp_path)
    manifest = read_manifest(copy)
    manifest["status"] = "interrupted"
    write_manifest(copy, manifest)
    cli("export", "softmax", "--run", str(copy), "--onnx").assert_one_line_error("did not finish", "--resume")
    # and the newest *finished* run is the default: here there is none under tmp_path
    cli("export", "softmax", "--out", str(tmp_path)).assert_one_line_error("no finished run of softmax")


@pytest.mark.parametrize("args, fragments", [
    (["train", "sofmax"], ["unknown model 'sofmax'", "did you mean 'softmax'"]),
    (["info", "lenet-5"], ["unknown model 'lenet-5'"]),
    (["train", "softmax", "--preset", "huge"], ["unknown preset 'huge'", "book", "tiny"]),
    (["train", "softmax", "--set", "hidden=3"], ["unknown hyper-parameter 'hidden'", "num_outputs"]),
    (["train", "softmax", "--set", "lr"], ["--set 'lr': expected KEY=VALUE"]),
    (["train", "softmax", "--set", "lr=fast"], ["--set lr=fast: expected a number"]),
    (["train", "softmax", "--set", "batch_size=2.5"], ["--set batch_size=2.5: expected an integer"]),
    (["train", "softmax", "--epochs", "0"], ["--epochs", "0"]),
    (["train", "softmax", "--precision", "8"], ["--precision"]),
    (["train", "softmax", "--bogus"], ["No such option", "--bogus"]),
    (["export", "softmax", "--run", "20990101T000000000000Z-dead", "--onnx"], ["no run '20990101T000000000000Z-dead'"]),
    (["verify", "linreg", "--out", "/nonexistent/artifacts"], ["no finished run of linreg"]),
    (["list", "--chapter", "99"], ["no model matches in chapter 99", "chapters with models: 3, 4"]),
    (["list", "softmax*", "--chapter", "9"], ["no model matches 'softmax*' in chapter 9", "of chapter 4"]),
    (["list", "nosuchmodel*"], ["no model matches 'nosuchmodel*'"]),
    (["list", "--chapter", "0"], ["no model matches in chapter 0", "chapters with models: 3, 4"]),
    (["train", "softmax", "--set", "nosuch=1"], ["unknown hyper-parameter 'nosuch'", "takes: "]),
    (["train", "gru-lm", "--preset", "tiny", "--set", "num_hiddens=0"], ["model gru-lm refuses its hyper-parameters",
                                                                          "hidden_size must be greater than zero"]),
])
def test_user_mistakes_are_one_line(cli, args, fragments):
    cli(*args).assert_one_line_error(*fragments)


def test_precision_names_ignore_case(cli, tmp_path):
    """``--precision BF16`` is bf16 (a user writes it either way); the manifest records the canonical name."""
    result = cli("train", "softmax", "--preset", "tiny", "--epochs", "1", "--precision", "BF16", "--device", "cpu",
                 "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "softmax" / result.stdout.splitlines()[-1].rsplit("/", 1)[-1]
    assert read_manifest(run)["train"]["precision"] == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_cuda_without_cuda_is_one_line(cli, tmp_path):
    cli("train", "softmax", "--preset", "tiny", "--device", "cuda", "--out", str(tmp_path)).assert_one_line_error(
        "CUDA is not available", "--device cpu")
    assert not any(tmp_path.iterdir())  # no half-made run left behind


def test_missing_dataset_offline_is_one_line_naming_the_file_and_folders(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    result = cli("train", "softmax", "--out", str(tmp_path / "out"))
    result.assert_one_line_error("fashion-mnist: missing FashionMNIST/raw/train-images-idx3-ubyte",
                                 str(tmp_path / "data"), str(tmp_path / "home"), "ZOO_DATA")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(cli):
    result = cli("--debug", "train", "sofmax")
    assert result.returncode == 1 and "Traceback" in result.stderr and "UnknownNameError" in result.stderr


def test_debug_after_the_subcommand_works_as_the_error_lines_say(cli):
    """"rerun with --debug" is read as "append --debug": the flag is the group's, accepted anywhere before `--`."""
    result = cli("train", "sofmax", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "UnknownNameError" in result.stderr
    assert "No such option" not in result.stderr


def test_an_unknown_hyper_parameter_lists_the_known_ones_once(cli):
    message = cli("train", "softmax", "--set", "nosuch=1").stderr
    assert message.count("num_outputs") == 1


def test_bare_zoo_prints_its_help(cli):
    result = cli()
    assert result.returncode == 0 and result.stdout.startswith("Usage: zoo") and "train" in result.stdout
    assert not result.stderr.strip()


def test_list_patterns_match_any_case(cli):
    assert cli("list", "LeNet*").stdout.splitlines()[1].startswith("lenet")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_early_stop_patience_from_the_command_line(tmp_path, cli, restore_threads):
    """`--early-stop-patience` reaches the trainer, is recorded, keeps best/, and cannot change on --resume."""
    result = cli("train", "softmax", "--preset", "tiny", "--epochs", "4", "--early-stop-patience", "1",
                 "--set", "lr=50", "--threads", "1", "--out", str(tmp_path))  # lr 50: val_acc wanders
    assert result.returncode == 0, result.stderr
    run = tmp_path / "softmax" / result.stdout.splitlines()[-1].rsplit("/", 1)[-1]
    manifest = read_manifest(run)
    assert manifest["trainer"]["early_stop_patience"] == 1
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i))
    assert manifest["train"]["best_epoch"] == best + 1
    assert manifest["metrics"]["val_acc"] == pytest.approx(history[best]["val_acc"], abs=1e-6)
    assert json.loads((run / "best" / "best.json").read_text())["epoch"] == best + 1
    assert manifest["train"]["stopped_early"] == (len(history) < 4)
    assert manifest["train"]["threads"] == 1  # --threads below
    cli("train", "softmax", "--resume", str(run), "--early-stop-patience", "2",
        "--out", str(tmp_path)).assert_one_line_error("--resume")


def test_info_layers_prints_each_layers_output_shape(cli):
    result = cli("info", "softmax", "--layers", "--preset", "tiny")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "7,850 parameters" in lines[0] and "(1, 1, 28, 28)" in lines[0]
    assert lines[2].split() == ["0", "Flatten", "1x784"] and lines[3].split() == ["1", "Linear", "1x10"]
    as_json = json.loads(cli("info", "softmax", "--layers", "--json").stdout)
    assert as_json == [{"name": "0", "layer": "Flatten", "output_shape": [1, 784]},
                       {"name": "1", "layer": "Linear", "output_shape": [1, 10]}]
