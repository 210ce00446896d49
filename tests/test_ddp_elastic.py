"""torchrun beyond one launcher: two launchers as two nodes, and a worker lost mid-training, with and without
torchrun's restarts. Everything on the CPU (gloo), on the loopback interface, each launch bounded in time.

All the jobs train the same thing (softmax, tiny preset, 4 epochs, 2 ranks x batch 16, 8 steps an epoch), so they
must end with the weights of one uninterrupted two-process job, bit for bit: the ranks' shards are the same whatever
launched them, and a resumed run restores the weights, optimiser, RNG and data order of its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo_core import get_model
from zoo_core.artifacts import read_manifest
from zoo_core.weights import load_weights

TRAIN = ["-m", "zoo_core", "train", "softmax", "--preset", "tiny", "--device", "cpu", "--epochs", "4",
         "--batch-size", "16"]
KILL_RANK_1_AT_STEP_20 = {"ZOO_TEST_KILL_AT_STEP": "1:20"}  # mid-epoch 3: epoch 2's checkpoint is the last
TIMEOUT = 300


@pytest.fixture(autouse=True)
def no_stray_workers(tmp_path):
    """torchrun starts its workers in sessions of their own, so a launcher killed at its timeout leaves them running
    (seen: two workers of a timed-out restart test still alive 45 minutes later). After each test, end every process
    still working for it: its command line names the test's folder."""
    yield
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(tmp_path) in command:
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:  # gone already, or not ours to read
            continue


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZOO_PLUGINS": "zoo-softmax", **(extra or {})}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections stay on loopback
    return env


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=job_env(env))


def only_run(out: Path) -> Path:
    runs = list((out / "softmax").iterdir())
    assert len(runs) == 1, runs  # one run, whatever the number of launchers or attempts
    return runs[0]


def weights(run: Path) -> torch.Tensor:
    model = get_model("softmax", preset="tiny")
    load_weights(model, run / "model.safetensors")
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def zoo_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("zoo: ")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> torch.Tensor:
    """The weights of an uninterrupted job: one launcher, two processes."""
    out = tmp_path_factory.mktemp("reference")
    proc = torchrun("--standalone", "--nproc_per_node", "2", *TRAIN, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return weights(only_run(out))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_launchers_as_two_nodes_match_one_launcher(tmp_path, reference):
    """`torchrun --nnodes 2 --rdzv-backend c10d` twice on 127.0.0.1, one process each: one run folder written by
    global rank 0, world size 2, and the weights of the one-launcher job."""
    endpoint = f"127.0.0.1:{free_port()}"
    node = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
            "--rdzv-id", f"zoo-test-{os.getpid()}", "--local-addr", "127.0.0.1"]
    launchers = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *node, *TRAIN, "--out",
                                   str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=job_env()) for _ in range(2)]
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=TIMEOUT))
    finally:
        for launcher in launchers:
            launcher.kill()
    for launcher, (_, stderr) in zip(launchers, outputs):
        assert launcher.returncode == 0, stderr[-3000:]
    run = only_run(tmp_path)
    assert sorted(stdout.strip() for stdout, _ in outputs) == ["", str(run)]  # rank 0's launcher prints the run
    manifest = read_manifest(run)
    assert manifest["status"] == "completed" and manifest["train"]["world_size"] == 2
    assert manifest["train"]["params_in_sync"] is True and manifest["train"]["examples"] == 4 * 256
    assert torch.equal(weights(run), reference)


def test_a_lost_worker_is_restarted_and_the_run_continues_from_its_checkpoint(tmp_path, reference):
    """`--max-restarts 1`: rank 1 dies at step 20; torchrun restarts both workers, which find the run of this job
    and continue it from epoch 2's checkpoint. One run, completed, and the uninterrupted job's weights."""
    proc = torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1", *TRAIN, "--out", str(tmp_path),
                    env=KILL_RANK_1_AT_STEP_20)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(tmp_path)
    assert proc.stdout.strip() == str(run)
    assert f"torchrun restarted the job (restart 1): continuing run {run} from its checkpoint" in proc.stderr
    manifest = read_manifest(run)
    assert manifest["status"] == "completed" and "error" not in manifest
    assert manifest["train"]["torchrun_restarts"] == 1 and manifest["train"]["epochs"] == 4
    assert [r["epoch"] for r in manifest_history(run)] == [1, 2, 3, 4]
    assert torch.equal(weights(run), reference)


def test_a_lost_worker_without_restarts_fails_in_one_line_and_resumes(tmp_path, reference):
    """No restarts: the job fails, the zoo says so in one line (where it stopped, why, how to continue), the run
    is marked failed with epoch 2's checkpoint, and `--resume` under torchrun finishes it with the same weights."""
    proc = torchrun("--standalone", "--nproc_per_node", "2", *TRAIN, "--out", str(tmp_path),
                    env=KILL_RANK_1_AT_STEP_20)
    assert proc.returncode != 0
    run = only_run(tmp_path)
    lines = zoo_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("zoo: error: training stopped at epoch 3, step 20: ")
    assert lines[0].endswith(f"; continue with: zoo train softmax --resume {run}")
    assert not re.search(r'File ".*/zoo_core/', proc.stderr)  # no worker traceback: only torchrun's own report
    manifest = read_manifest(run)
    assert manifest["status"] == "failed" and manifest["error"].startswith("training stopped at epoch 3, step 20")
    assert (run / "checkpoint" / "checkpoint.json").is_file() and read_checkpoint_epoch(run) == 2

    resumed = torchrun("--standalone", "--nproc_per_node", "2", "-m", "zoo_core", "train", "softmax", "--device",
                       "cpu", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = read_manifest(run)
    assert manifest["status"] == "completed" and "error" not in manifest
    assert torch.equal(weights(run), reference)


def manifest_history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def read_checkpoint_epoch(run: Path) -> int:
    return json.loads((run / "checkpoint" / "checkpoint.json").read_text())["epoch"]
