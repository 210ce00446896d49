"""The plugin system end to end: real entry points, the allowlist, broken plugins, duplicates, the third-party
contract suite, and `zoo list` never importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_a_run_of_another_plugins_model_of_that_name_is_refused(acme, plugin_factory, zoo, tmp_path):
    """A plugin that sorts first takes a name (the other is refused) and trains it; once it is gone, the name's new
    owner does not pick up that run: export and verify (and predict, which finds runs the same way,
    `workflows.finished_run`) say whose it is, in one line."""
    squatter = plugin_factory(tmp_path / "squatter", "aaa-zoo", {"aaa_zoo/__init__.py": "", "aaa_zoo/model.py":
                              TINY_MODEL.replace("acme_zoo", "aaa_zoo"), "aaa_zoo/plugin.py":
                              tiny_plugin().replace("acme_zoo", "aaa_zoo")}, {"aaa": "aaa_zoo.plugin"})
    out = str(tmp_path / "out")
    trained = zoo("train", "tiny-regressor", "--preset", "tiny", "--epochs", "1", "--out", out,
                  env=pythonpath(squatter, acme))
    assert trained.returncode == 0, trained.stderr
    assert json.loads((Path(trained.stdout.splitlines()[-1]) / "manifest.json").read_text())["plugin"]["name"] \
        == "aaa-zoo"
    for args in (["export", "tiny-regressor", "--onnx"], ["verify", "tiny-regressor"]):
        zoo(*args, "--out", out, env=pythonpath(acme)).assert_one_line_error(
            "trained plugin aaa-zoo's tiny-regressor, and tiny-regressor is now plugin acme-zoo's")


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
    unmatched = zoo("list", "broken*", env=env)  # the model looked for may be the broken plugin's
    unmatched.assert_one_line_error("no model matches 'broken*'; broken plugins that may provide it: broken-zoo")


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


SQUATTER = """
from zoo_core import DataSpec, hookimpl

@hookimpl(trylast=True)  # pluggy would list this implementation first: precedence must not depend on it
def zoo_register_datasets(register):
    register(DataSpec("{dataset}", "acme_zoo.model:Tiny", "a dataset name the core has"))
"""


def test_a_taken_name_refuses_only_the_later_plugin(acme, plugin_factory, tmp_path, zoo):
    """A third-party plugin that registers `softmax` (or the core's `fashion-mnist`) is refused like a broken one,
    whatever pluggy's order; the name stays with the plugin that has it and every command keeps working."""
    dup = plugin_factory(tmp_path / "dup", "dup-zoo", {"dup_zoo.py": tiny_plugin(name="softmax").replace(
        "@hookimpl", "@hookimpl(trylast=True)")}, {"dup": "dup_zoo"})
    squat = plugin_factory(tmp_path / "squat", "aaa-zoo", {"aaa_zoo.py": SQUATTER.format(dataset="fashion-mnist")},
                           {"aaa": "aaa_zoo"})
    env = pythonpath(acme, dup, squat)
    assert zoo("--version", env=env).returncode == 0
    listed = zoo("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    owners = {m["name"]: m["plugin"] for m in json.loads(listed.stdout)}
    assert owners["softmax"] == "zoo-softmax" and owners["tiny-regressor"] == "acme-zoo"
    assert sorted(line.split(" is broken")[0] for line in listed.stderr_lines) == [
        "zoo: warning: plugin aaa-zoo", "zoo: warning: plugin dup-zoo"]

    report = zoo("plugins", env=env)
    assert report.returncode == 1
    rows = {line.split()[0]: line for line in report.stdout.splitlines()[1:]}
    assert "BROKEN: refused: model name 'softmax' belongs to plugin zoo-softmax" in rows["dup-zoo"]
    assert "BROKEN: refused: dataset name 'fashion-mnist' belongs to plugin zoo-core" in rows["aaa-zoo"]
    by_name = {p["name"]: p for p in json.loads(zoo("plugins", "--json", env=env).stdout)}
    assert by_name["dup-zoo"]["models"] == [] and by_name["zoo-softmax"]["models"] == ["softmax-scratch", "softmax"]
    assert "fashion-mnist" in by_name["zoo-core"]["datasets"]

    info = zoo("info", "softmax", "--json", env=env)
    assert json.loads(info.stdout)["builder"] == "zoo_softmax.softmax:SoftmaxRegression"


def test_a_taken_name_leaves_the_first_party_plugins_tests_passing(plugin_factory, tmp_path):
    dup = plugin_factory(tmp_path / "dup", "dup-zoo", {"dup_zoo.py": tiny_plugin(name="softmax")}, {"dup": "dup_zoo"})
    tests = Path(__file__).resolve().parents[1] / "plugins" / "zoo-softmax" / "tests" / "test_contract.py"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", str(tests), "-k",
                           "registers_models or spec_is_complete or card_matches"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **pythonpath(dup)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "7 passed" in proc.stdout  # registers_models; spec_is_complete x 2 models; card_matches x 2 x 2 presets


def test_a_plugin_registering_a_name_twice_is_broken(plugin_factory, tmp_path, zoo):
    twice = plugin_factory(tmp_path / "twice", "twice-zoo", {"twice_zoo.py": tiny_plugin(name="echo") + """
@hookimpl
def zoo_register_datasets(register):
    from zoo_core import DataSpec
    register(DataSpec("echo-data", "acme_zoo.model:Tiny", "first"))
    register(DataSpec("echo-data", "acme_zoo.model:Tiny", "second"))
"""}, {"twice": "twice_zoo"})
    report = {p["name"]: p for p in json.loads(zoo("plugins", "--json", env=pythonpath(twice)).stdout)}
    assert report["twice-zoo"]["error"] == "dataset 'echo-data' is registered twice by this plugin"
    assert report["twice-zoo"]["models"] == [] and report["twice-zoo"]["datasets"] == []


def test_debug_plugins_shows_the_import_traceback(plugin_factory, tmp_path, zoo):
    broken = plugin_factory(tmp_path / "broken", "broken-zoo", {"broken_zoo/__init__.py": "",
                            "broken_zoo/plugin.py": "import json\n\ndef helper():\n    raise ImportError('needs libfoo 3')\n\n"
                                                    "helper()\n"}, {"broken": "broken_zoo.plugin"})
    plain = zoo("plugins", env=pythonpath(broken))
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    debug = zoo("--debug", "plugins", env=pythonpath(broken))
    assert debug.returncode == 1 and "BROKEN: ImportError: needs libfoo 3" in debug.stdout
    assert "plugin broken-zoo (broken_zoo.plugin):" in debug.stderr and "Traceback" in debug.stderr
    assert 'broken_zoo/plugin.py", line 4, in helper' in debug.stderr  # the plugin's own frame, with its line


def test_allowlisted_plugin_that_is_not_installed_is_named_once(zoo, tmp_path):
    trained = zoo("train", "softmax", "--preset", "tiny", "--out", str(tmp_path), env={"ZOO_PLUGINS": "zoo-sofmax"})
    trained.assert_one_line_error("unknown model 'softmax'", "ZOO_PLUGINS names zoo-sofmax, which is not installed")
    assert not (tmp_path / "softmax").exists()

    listed = zoo("list", env={"ZOO_PLUGINS": "zoo-linear, zoo-sofmax"})
    assert listed.returncode == 0 and "linreg" in listed.stdout
    assert listed.stderr_lines == ["zoo: warning: ZOO_PLUGINS names zoo-sofmax, which is not installed "
                                   "(see `zoo plugins`)"]
    report = zoo("plugins", env={"ZOO_PLUGINS": "zoo-linear,zoo-sofmax"})
    assert report.returncode == 1 and report.stderr == ""
    row = next(line for line in report.stdout.splitlines() if line.startswith("zoo-sofmax"))
    assert "NOT INSTALLED: ZOO_PLUGINS names it" in row
    installed = zoo("plugins", "--json", env={"ZOO_PLUGINS": "zoo-linear"})
    assert installed.returncode == 0 and all(p["installed"] for p in json.loads(installed.stdout))


def test_list_shows_each_models_plugin(acme, zoo):
    listed = zoo("list", env=pythonpath(acme))
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:7] == ["NAME", "CH", "SECTION", "TASK", "DATASET", "PLUGIN", "SUMMARY"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name["tiny-regressor"][5] == "acme-zoo" and by_name["softmax"][5] == "zoo-softmax"


# --- the contract suite, as a third party runs it ---------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_plugin(site: Path, plugin_factory, package: str) -> Path:
    """Install the fixture package tests/fixtures/PACKAGE as distribution PACKAGE (hyphenated), entry point
    PACKAGE.plugin."""
    files = {f"{package}/{f.name}": f.read_text() for f in (FIXTURES / package).glob("*.py")}
    return plugin_factory(site, package.replace("_", "-"), files, {package.split("_")[0]: f"{package}.plugin"})


def run_contract(tmp_path: Path, env: dict[str, str], body: str, *args: str) -> subprocess.CompletedProcess:
    """pytest on a one-class contract test file (`body` is the class body) in a fresh folder."""
    folder = tmp_path / "contract_tests"
    folder.mkdir(exist_ok=True)
    (folder / "test_contract.py").write_text(
        f"from zoo_core.testing import ModelContract\n\n\nclass TestContract(ModelContract):\n    {body}\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder), *args],
                          capture_output=True, text=True, cwd=folder, timeout=300, env={**os.environ, **env})


def test_contract_suite_fails_a_loss_that_broadcasts(tmp_path, plugin_factory):
    site = fixture_plugin(tmp_path / "site", plugin_factory, "lossy_zoo")
    proc = run_contract(tmp_path, pythonpath(site), 'plugin = "lossy-zoo"', "-k", "loss_is_a_mean")
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "FAILED test_contract.py::TestContract::test_loss_is_a_mean_over_examples[lossy-regressor]" in proc.stdout
    assert "(outputs (4, 1), labels (4,)): does the loss broadcast labels" in proc.stdout


def test_contract_suite_fails_a_plugin_that_imports_torch_when_it_loads(tmp_path, plugin_factory):
    site = fixture_plugin(tmp_path / "site", plugin_factory, "lossy_zoo")
    fixture_plugin(site, plugin_factory, "heavy_zoo")
    env = pythonpath(site)
    light = run_contract(tmp_path, env, 'plugin = "lossy-zoo"', "-k", "heavy_imports")
    assert light.returncode == 0 and "1 passed" in light.stdout, light.stdout[-3000:]
    heavy = run_contract(tmp_path, env, 'plugin = "heavy-zoo"', "-k", "heavy_imports")
    assert heavy.returncode == 1 and "1 failed" in heavy.stdout, heavy.stdout[-3000:]
    assert "loading plugin heavy-zoo imports " in heavy.stdout and "torch" in heavy.stdout


def test_contract_suite_says_a_plugin_is_broken_not_missing(tmp_path, plugin_factory):
    broken = plugin_factory(tmp_path / "broken", "broken-zoo", {"broken_zoo/__init__.py": "",
                            "broken_zoo/plugin.py": "raise ImportError('needs libfoo 3')\n"},
                            {"broken": "broken_zoo.plugin"})
    proc = run_contract(tmp_path, pythonpath(broken), 'plugin = "broken-zoo"', "-k", "registers_models")
    assert proc.returncode == 1
    assert "plugin 'broken-zoo' is installed but broken: ImportError: needs libfoo 3" in proc.stdout
    missing = run_contract(tmp_path, {}, 'plugin = "nowhere-zoo"', "-k", "registers_models")
    assert missing.returncode == 1 and "plugin 'nowhere-zoo' is not installed" in missing.stdout


@pytest.mark.parametrize("args", [["list"], ["list", "soft*", "--json"], ["info", "softmax", "--json"], ["plugins"]])
def test_reading_specs_never_imports_torch(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo_core", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "zoo_core" in imported
    assert not imported & {"torch", "torchvision", "numpy", "onnx", "onnxruntime"}


def readme_plugin(site, plugin_factory, num_params_tiny: int | None = None, csv_sha1: str | None = None):
    """The "Write your own plugin" example of README.md, written out as an installed distribution: every
    ``acme_zoo/*.py`` block; `num_params_tiny` replaces acme-mlp's tiny parameter count, `csv_sha1` the checksum of
    the springs CSV."""
    import re
    import tomllib

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = {m.group(2).strip(): m.group(3) for m in
              re.finditer(r"```(python|toml)\n# (\S+)\n(.*?)```", readme, re.S)}
    project = tomllib.loads(blocks["pyproject.toml"])["project"]
    files = {path: source for path, source in blocks.items() if path.startswith("acme_zoo/")}
    assert set(files) == {"acme_zoo/plugin.py", "acme_zoo/data.py", "acme_zoo/model.py"}
    if num_params_tiny is not None:
        files["acme_zoo/plugin.py"] = files["acme_zoo/plugin.py"].replace("num_params=6370",
                                                                          f"num_params={num_params_tiny}")
    if csv_sha1 is not None:
        files["acme_zoo/data.py"] = re.sub(r'"[0-9a-f]{40}"', f'"{csv_sha1}"', files["acme_zoo/data.py"])
    plugin_factory(site, project["name"], {"acme_zoo/__init__.py": "", **files}, project["entry-points"]["zoo"])
    assert project["optional-dependencies"]["dev"] == ["zoo-core[dev]"]  # `pip install -e '.[dev]'` brings pytest
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
    assert " passed" in good.stdout and "failed" not in good.stdout and "acme-springs-mlp" in subprocess.run(
        [sys.executable, "-m", "zoo_core", "list"], capture_output=True, text=True,
        env={**os.environ, **pythonpath(site)}).stdout

    lying, _ = readme_plugin(tmp_path / "lying", plugin_factory, num_params_tiny=6371)
    bad = pytest_run(lying)
    assert bad.returncode == 1
    assert "test_card_matches_built_model[acme-mlp-tiny]" in bad.stdout and "1 failed" in bad.stdout


def readme_generation_plugin(site, plugin_factory, replace: tuple[str, str] | None = None) -> Path:
    """README's "A generation model" (acme-charlm) as an installed distribution: its ``acme_charlm/*.py`` blocks,
    with `replace` (old, new) applied to its plugin module (old must occur)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    files = {m.group(1): m.group(2) for m in re.finditer(r"```python\n# (acme_charlm/\S+)\n(.*?)```", readme, re.S)}
    assert set(files) == {"acme_charlm/plugin.py", "acme_charlm/model.py"}
    if replace is not None:
        assert replace[0] in files["acme_charlm/plugin.py"]
        files["acme_charlm/plugin.py"] = files["acme_charlm/plugin.py"].replace(*replace)
    entry = re.search(r'\n(acme-charlm) = "(acme_charlm\.plugin)"\n', readme)
    return plugin_factory(site, "acme-charlm", {"acme_charlm/__init__.py": "", **files}, {entry[1]: entry[2]})


def test_the_readme_generation_plugin_gets_the_contract_suite(plugin_factory, tmp_path, zoo):
    """README's language-model plugin passes the whole contract suite (ONNX Runtime's greedy and beam search tokens
    included); a card whose step graph declares another state size than the model's, or a language model without a
    step graph, fails it with a sentence that says so (and `zoo info` warns of the first)."""
    good = run_contract(tmp_path, pythonpath(readme_generation_plugin(tmp_path / "good", plugin_factory)),
                        'plugin = "acme-charlm"')
    assert good.returncode == 0 and "failed" not in good.stdout, good.stdout[-3000:]
    assert "skipped" not in good.stdout  # the generation test ran, it did not skip

    wrong = readme_generation_plugin(tmp_path / "wrong", plugin_factory, ('{"H": (hidden,)}', '{"H": (hidden + 1,)}'))
    card = run_contract(tmp_path, pythonpath(wrong), 'plugin = "acme-charlm"', "-k", "card_matches")
    assert card.returncode == 1 and "2 failed" in card.stdout, card.stdout[-3000:]
    assert ("preset tiny, graph step: Model.graph_inputs gives input H: shape (2, 8) does not fit "
            "H: float32[batch, 9]") in card.stdout
    info = zoo("info", "acme-char-gru", env=pythonpath(wrong))  # the card, and a warning where it is wrong
    assert info.returncode == 0 and "H: float32[batch, 9]" in info.stdout
    assert info.stderr_lines[0] == (
        "zoo: warning: the card of acme-char-gru declares, in graph step of its book preset, H: float32[batch, 65] "
        "(the built model's: H: float32[batch, 64]); H_new: float32[batch, 65] (the built model's: H_new: "
        "float32[batch, 64]): plugin acme-charlm should declare the built model's sizes"), info.stderr
    assert len(info.stderr_lines) == 2 and "of its tiny preset, H: float32[batch, 9]" in info.stderr_lines[1]

    mute = readme_generation_plugin(tmp_path / "mute", plugin_factory, (
        ',\n                  graphs=lm_graphs(28, {"H": (hidden,)}))', ")"))
    step = run_contract(tmp_path, pythonpath(mute), 'plugin = "acme-charlm"', "-k", "generation_on_onnx")
    assert step.returncode == 1 and "1 failed" in step.stdout, step.stdout[-3000:]
    assert "a language-modeling model declares no step graph, so zoo predict cannot decode with it" in step.stdout


def test_the_readme_plugins_dataset_reads_its_file_and_checks_it(plugin_factory, tmp_path, zoo):
    """The README's dataset on its real file: found through --data-dir, checked against its SHA-1, trained on; a
    file that does not match, or none, is one line naming it."""
    import hashlib

    rows = ["load,stiffness,extension"] + [f"{load},{k},{load / k:.4f}" for load in range(1, 11) for k in (1, 2, 4, 5)]
    data = tmp_path / "data"
    (data / "acme").mkdir(parents=True)
    (data / "acme" / "springs.csv").write_text("\n".join(rows) + "\n")
    sha1 = hashlib.sha1((data / "acme" / "springs.csv").read_bytes()).hexdigest()
    site, _ = readme_plugin(tmp_path / "site", plugin_factory, csv_sha1=sha1)
    env = {**pythonpath(site), "ZOO_OFFLINE": "1"}
    out = tmp_path / "out"
    trained = zoo("train", "acme-springs-mlp", "--epochs", "2", "--data-dir", str(data), "--out", str(out), env=env)
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((Path(trained.stdout.strip()) / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["data"]["name"] == "acme-springs"
    assert manifest["train"]["examples"] == 2 * 32  # 80% of 40 rows, two epochs

    wrong, _ = readme_plugin(tmp_path / "wrong", plugin_factory, csv_sha1="0" * 40)
    zoo("train", "acme-springs-mlp", "--data-dir", str(data), "--out", str(out), env={**pythonpath(wrong),
        "ZOO_OFFLINE": "1"}).assert_one_line_error("springs.csv")
    zoo("train", "acme-springs-mlp", "--data-dir", str(tmp_path / "empty"), "--out", str(out), env={
        **env, "ZOO_DATA": str(tmp_path / "empty")}).assert_one_line_error("acme-springs: missing acme/springs.csv")


def test_info_warns_when_the_card_miscounts_parameters(plugin_factory, tmp_path, zoo):
    """README's example plugin with a card that says 6,371 parameters for a model of 6,370."""
    site, _ = readme_plugin(tmp_path / "site", plugin_factory, num_params_tiny=6371)
    env = pythonpath(site)
    lying = zoo("info", "acme-mlp", "--layers", "--preset", "tiny", env=env)
    assert lying.returncode == 0 and "6,370 parameters" in lying.stdout
    assert lying.stderr_lines == ["zoo: warning: the card of acme-mlp declares 6,371 parameters for its tiny preset, "
                                  "the built model has 6,370: plugin acme-zoo should declare num_params=6370"]
    as_json = zoo("info", "acme-mlp", "--layers", "--preset", "tiny", "--json", env=env)
    assert json.loads(as_json.stdout) and len(as_json.stderr_lines) == 1  # JSON on stdout, the warning beside it
    honest = zoo("info", "acme-mlp", "--layers", "--preset", "book", env=env)
    assert honest.returncode == 0 and honest.stderr == ""
    card = zoo("info", "acme-mlp", env=env)  # the plain card checks every preset's count too
    assert card.returncode == 0 and "6,371 parameters" in card.stdout
    assert card.stderr_lines == lying.stderr_lines


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
