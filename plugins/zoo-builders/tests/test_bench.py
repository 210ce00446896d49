"""``zoo bench matmul`` (d2l §6.7 exercises): the timing functions, and the command added through the plugin hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from zoo_builders.bench import format_table, matmul_benchmark, matmul_timing, norm_logging
from zoo_core.cli import main

SMALL = ["--large", "64", "--small", "4", "--repeat", "2", "--products", "20", "--size", "8"]


def test_matmul_timing_figures():
    result = matmul_timing(32, torch.device("cpu"), repeat=3)
    assert result["size"] == 32 and result["seconds"] > 0
    assert result["gflops"] == pytest.approx(2 * 32**3 / result["seconds"] / 1e9)


def test_norm_logging_logs_the_same_norms_both_ways():
    result = norm_logging(products=50, size=10, device=torch.device("cpu"))
    assert result["products"] == 50 and result["item_each_s"] > 0 and result["once_at_end_s"] > 0
    assert result["max_abs_diff"] < 1e-4


def test_matmul_benchmark_per_device_and_its_table():
    results = matmul_benchmark(["cpu"], large=48, small=4, large_repeat=2, small_repeat=10, products=10,
                               product_size=6)
    assert [r["device"] for r in results] == ["cpu"]
    assert results[0]["large"]["size"] == 48 and results[0]["small"]["size"] == 4
    lines = format_table(results)
    assert lines[0].split() == ["DEVICE", "TEST", "SIZE", "TIME", "GFLOP/S"]
    assert len(lines) == 5 and all(line.startswith("cpu") for line in lines[1:])
    assert "10 norms, .item() each" in lines[3] and "10 norms, read once at end" in lines[4]


def test_zoo_bench_matmul_prints_the_timings(capsys):
    with pytest.raises(SystemExit) as code:
        main(["bench", "matmul", "--device", "cpu", *SMALL])
    out = capsys.readouterr().out
    assert code.value.code == 0
    assert "large matmul (per product)" in out and "20 norms, .item() each" in out
    assert len([line for line in out.splitlines() if line.startswith("cpu")]) == 4
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as code:
            main(["bench", "matmul", "--device", "cpu", "--json", "--threads", "1", *SMALL])
    finally:
        torch.set_num_threads(threads)
    assert code.value.code == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu" and result["threads"] == 1
    assert result["large"]["size"] == 64 and result["large"]["seconds"] > 0
    assert result["norms"]["products"] == 20 and result["norms"]["item_each_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_asking_for_a_missing_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as code:
        main(["bench", "matmul", "--device", "cuda", *SMALL])
    err = capsys.readouterr().err
    assert code.value.code == 1
    assert err.startswith("zoo: error:") and "CUDA is not available" in err and len(err.strip().splitlines()) == 1


@pytest.mark.gpu
def test_gpu_timings(capsys):
    with pytest.raises(SystemExit) as code:
        main(["bench", "matmul", "--json", *SMALL])
    assert code.value.code == 0
    assert [r["device"] for r in json.loads(capsys.readouterr().out)] == ["cpu", "cuda:0"]


def test_the_plugin_module_stays_torch_free():
    """``zoo list`` imports every plugin module: this one (and the zoo_builders package) must not import torch.
    Only this plugin is loaded (``ZOO_PLUGINS``): the others answer for themselves."""
    code = ("import sys, zoo_builders, zoo_builders.plugin, click\n"
            "from zoo_core import plugins\n"
            "group = click.Group('zoo')\n"
            "plugins.register_commands(group)\n"
            "assert 'bench' in group.commands and 'matmul' in group.commands['bench'].commands\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = {**os.environ, "ZOO_PLUGINS": "zoo-builders"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
