"""DDP through torchrun on the CPU (gloo): one run folder, ranks in sync, and the same result as one process.

With a mean loss, equal shards and averaged gradients, 2 ranks x batch b take the same steps as 1 process x batch 2b:
rank r's batch i holds examples perm[2bi + r], perm[2bi + 2 + r], ... so the ranks' batches together are exactly the
single process's batch i. The weights must agree to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from zoo_core import get_model
from zoo_core.artifacts import read_manifest
from zoo_core.weights import load_weights


def test_torchrun_two_cpu_ranks_match_one_process(tmp_path, zoo):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    common = ["--preset", "tiny", "--device", "cpu", "--epochs", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "zoo_core", "train", "softmax", *common, "--batch-size", "16", "--out", str(ddp_out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((ddp_out / "softmax").iterdir())
    assert len(runs) == 1  # only rank 0 writes
    assert [line for line in proc.stdout.splitlines() if line.strip()] == [str(runs[0])]  # and prints
    manifest = read_manifest(runs[0])
    assert manifest["train"]["world_size"] == 2 and manifest["train"]["params_in_sync"] is True
    assert manifest["train"]["examples"] == 2 * 256  # every example once per epoch, across ranks

    single = zoo("train", "softmax", *common, "--batch-size", "32", "--out", str(single_out))
    assert single.returncode == 0, single.stderr

    def weights(run):
        model = get_model("softmax", preset="tiny")
        load_weights(model, run / "model.safetensors")
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    ddp_w, single_w = weights(runs[0]), weights(single_out / "softmax" / os.listdir(single_out / "softmax")[0])
    assert torch.allclose(ddp_w, single_w, atol=1e-5), (ddp_w - single_w).abs().max()
    torch.manual_seed(0)  # the CLI's default seed: these are the weights training started from
    initial = torch.cat([p.detach().flatten() for p in get_model("softmax", preset="tiny").parameters()])
    assert (ddp_w - initial).abs().max() > 1e-3  # it trained
