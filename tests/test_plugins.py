"""The plugin system end to end: real entry points, the allowlist, broken plugins, duplicates, the third-party
contract suite, and `zoo list` never importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TINY_MODEL = '''
import torch
from torch import nn
from zoo_core import Model


class Tiny(Model):
    """A two-layer regressor: a third party's model."""

    def __init__(self, hidden: int = 4, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, X):
        return self.net(X)

    def loss(self, y_hat, y):
        return ((y_hat - y) ** 2).mean()

    def example_inputs(self, batch_size=2):
        return (torch.randn(batch_size, 2),)
'''


def tiny_plugin(num_params: int = 17, name: str = "tiny-regressor") -> str:
    return f'''
from zoo_core import ModelSpec, Preset, hookimpl


@hookimpl
def zoo_register_models(register):
    register(ModelSpec(
        name="{name}", builder="acme_zoo.model:Tiny", chapter=99, section="99.1", task="regression",
        summary="A third-party regressor", dataset="synthetic-regression",
        inputs=["X: float32[batch, 2]"], outputs=["y_hat: float32[batch, 1]"],
        presets={{"book": Preset(model={{"hidden": 4}}, num_params={num_params}),
                  "tiny": Preset(model={{"hidden": 4}}, data={{"num_train": 64, "num_val": 32}},
                                 num_params={num_params})}}))
'''


@pytest.fixture
def acme(tmp_path, plugin_factory):
    """A working third-party plugin distribution, acme-zoo, with one model."""
    site = tmp_path / "site"
    plugin_factory(site, "acme-zoo", {"acme_zoo/__init__.py": "", "acme_zoo/model.py": TINY_MODEL,
                                      "acme_zoo/plugin.py": tiny_plugin()}, {"acme": "acme_zoo.plugin"})
    return site


def pythonpath(*sites) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(str(s) for s in sites)}


def test_third_party_plugin_is_listed_and_trains(acme, zoo, tmp_path):
    env = pythonpath(acme)
    listed = json.loads(zoo("list", "--json", env=env).stdout)
    tiny = next(m for m in listed if m["name"] == "tiny-regressor")
    assert tiny["plugin"] == "acme-zoo" and tiny["chapter"] == 99
    assert {"linreg", "softmax"} <= {m["name"] for m in listed}

    report = {p["name"]: p for p in json.loads(zoo("plugins", "--json", env=env).stdout)}
    assert report["acme-zoo"]["models"] == ["tiny-regressor"]
    assert report["acme-zoo"]["version"] == "0.1.0" and report["acme-zoo"]["hooks"] == ["zoo_register_models"]
    assert report["zoo-core"]["builtin"] and "fashion-mnist" in report["zoo-core"]["datasets"]

    run = zoo("train", "tiny-regressor", "--preset", "tiny", "--out", str(tmp_path / "out"), env=env)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / run.stdout.splitlines()[-1] / "manifest.json").read_text())
    assert manifest["plugin"] == {"name": "acme-zoo", "version": "0.1.0"} and manifest["num_params"] == 17


def test_allowlist_limits_the_plugins_that_load(acme, zoo):
    env = pythonpath(acme)
    only_linear = {m["name"] for m in json.loads(zoo("list", "--json", env={**env, "ZOO_PLUGINS": "zoo-linear"}).stdout)}
    assert only_linear == {"linreg-scratch", "linreg", "weight-decay-scratch", "weight-decay"}
    # names are compared in normal form: zoo_linear and Zoo-Linear mean zoo-linear
    both = {m["name"] for m in json.loads(zoo("list", "--json", env={**env, "ZOO_PLUGINS": "Zoo_Linear, acme-zoo"}).stdout)}
    assert "tiny-regressor" in both and "softmax" not in both
    none = zoo("plugins", "--json", env={**env, "ZOO_PLUGINS": ""})
    assert [p["name"] for p in json.loads(none.stdout)] == ["zoo-core"]  # the built-in plugin always loads


def test_plugin_that_raises_on_import_is_isolated_and_reported(acme, plugin_factory, tmp_path, zoo):
    broken = plugin_factory(tmp_path / "broken", "broken-zoo", {"broken_zoo/__init__.py": "",
                            "broken_zoo/plugin.py": "raise ImportError('needs libfoo 3')\n"},
                            {"broken": "broken_zoo.plugin"})
    env = pythonpath(acme, broken)
    listed = zoo("list", env=env)
    assert listed.returncode == 0
    assert "tiny-regressor" in listed.stdout and "softmax" in listed.stdout
    assert len(listed.stderr_lines) == 1 and "broken-zoo" in listed.stderr and "needs libfoo 3" in listed.stderr
    assert "Traceback" not in listed.stderr

    report = zoo("plugins", env=env)
    assert report.returncode == 1
    assert "BROKEN: ImportError: needs libfoo 3" in report.stdout and "acme-zoo" in report.stdout

    missing = zoo("info", "broken-model", env=env)
    missing.assert_one_line_error("unknown model 'broken-model'", "broken-zoo")


def test_unknown_hook_and_failing_hook_break_only_their_plugin(acme, plugin_factory, tmp_path, zoo):
    typo = plugin_factory(tmp_path / "typo", "typo-zoo", {"typo_zoo.py": """
        from zoo_core import hookimpl

        @hookimpl
        def zoo_register_modles(register):
            pass
        """}, {"typo": "typo_zoo"})
    failing = plugin_factory(tmp_path / "failing", "failing-zoo", {"failing_zoo.py": tiny_plugin(name="half").replace(
        "                                 num_params=17)}))",
        "                                 num_params=17)}))\n    raise RuntimeError('registration bug')")},
        {"failing": "failing_zoo"})
    report = {p["name"]: p for p in json.loads(zoo("plugins", "--json", env=pythonpath(acme, typo, failing)).stdout)}
    assert "unknown hook(s) zoo_register_modles" in report["typo-zoo"]["error"]
    assert report["failing-zoo"]["error"] == "RuntimeError: registration bug"
    assert report["failing-zoo"]["models"] == []  # what it registered before raising is dropped
    assert report["acme-zoo"]["error"] is None
    names = {m["name"] for m in json.loads(zoo("list", "--json", env=pythonpath(acme, typo, failing)).stdout)}
    assert "half" not in names and "tiny-regressor" in names


def test_duplicate_model_names_are_an_error_naming_both_plugins(plugin_factory, tmp_path, zoo):
    dup = plugin_factory(tmp_path / "dup", "dup-zoo", {"dup_zoo.py": tiny_plugin(name="softmax")}, {"dup": "dup_zoo"})
    zoo("list", env=pythonpath(dup)).assert_one_line_error("'softmax'", "zoo-softmax", "dup-zoo")


@pytest.mark.parametrize("args", [["list"], ["list", "soft*", "--json"], ["info", "softmax"], ["plugins"]])
def test_reading_specs_never_imports_torch(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo_core", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "zoo_core" in imported
    assert not imported & {"torch", "torchvision", "numpy", "onnx", "onnxruntime"}


def readme_plugin(site, plugin_factory, num_params_tiny: int | None = None):
    """The "Write your own plugin" example of README.md, written out as an installed distribution."""
    import re
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = {m.group(2).strip(): m.group(3) for m in
              re.finditer(r"```(python|toml)\n# (\S+)\n(.*?)```", readme, re.S)}
    project = tomllib.loads(blocks["pyproject.toml"])["project"]
    plugin = blocks["acme_zoo/plugin.py"]
    if num_params_tiny is not None:
        plugin = plugin.replace("num_params=6370", f"num_params={num_params_tiny}")
    plugin_factory(site, project["name"], {"acme_zoo/__init__.py": "", "acme_zoo/plugin.py": plugin,
                                           "acme_zoo/model.py": blocks["acme_zoo/model.py"]},
                   project["entry-points"]["zoo"])
    return site, blocks["tests/test_contract.py"]


def test_the_readme_plugin_gets_the_contract_suite(plugin_factory, tmp_path):
    """README's example plugin passes the contract suite, and fails it when its card lies about its size."""
    site, test_source = readme_plugin(tmp_path / "site", plugin_factory)
    tests = tmp_path / "acme_tests"
    tests.mkdir()
    (tests / "test_contract.py").write_text(test_source)

    def pytest_run(site):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                              capture_output=True, text=True, cwd=tests, timeout=300,
                              env={**os.environ, **pythonpath(site)})

    good = pytest_run(site)
    assert good.returncode == 0, good.stdout + good.stderr
    assert " passed" in good.stdout and "failed" not in good.stdout and "tiny-mlp" in subprocess.run(
        [sys.executable, "-m", "zoo_core", "list"], capture_output=True, text=True,
        env={**os.environ, **pythonpath(site)}).stdout

    lying, _ = readme_plugin(tmp_path / "lying", plugin_factory, num_params_tiny=6371)
    bad = pytest_run(lying)
    assert bad.returncode == 1
    assert "test_card_matches_built_model[tiny-mlp-tiny]" in bad.stdout and "1 failed" in bad.stdout


def test_plugins_add_commands_and_a_taken_name_breaks_only_that_plugin(acme, plugin_factory, tmp_path, zoo):
    hello = plugin_factory(tmp_path / "hello", "hello-zoo", {"hello_zoo.py": """
        import click
        from zoo_core import hookimpl

        @hookimpl
        def zoo_register_commands(cli):
            @cli.command()
            @click.argument("name")
            def hello(name):
                \"\"\"Say hello.\"\"\"
                click.echo(f"hello {name}")
        """}, {"hello": "hello_zoo"})
    squatter = plugin_factory(tmp_path / "squat", "squat-zoo", {"squat_zoo.py": """
        from zoo_core import hookimpl

        @hookimpl
        def zoo_register_commands(cli):
            @cli.command(name="train")
            def train():
                pass
        """}, {"squat": "squat_zoo"})
    env = pythonpath(acme, hello, squatter)
    said = zoo("hello", "world", env=env)
    assert said.returncode == 0 and said.stdout == "hello world\n"
    assert "hello" in zoo("--help", env=env).stdout
    report = {p["name"]: p for p in json.loads(zoo("plugins", "--json", env=env).stdout)}
    assert report["hello-zoo"]["commands"] == ["hello"] and report["hello-zoo"]["error"] is None
    assert report["squat-zoo"]["error"] == "ValueError: command name(s) train already in use"
    trained = zoo("train", "tiny-regressor", "--preset", "tiny", "--out", str(tmp_path / "out"), env=env)
    assert trained.returncode == 0, trained.stderr  # the core's train survived the squatter
