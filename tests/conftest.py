"""Helpers shared by the core's tests: run the real CLI, and fabricate third-party plugins.

A fabricated plugin is a real distribution as far as Python is concerned: a package plus a ``*.dist-info`` folder
with METADATA and ``entry_points.txt`` on ``PYTHONPATH``, which `importlib.metadata` finds like any pip install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from zoo_core import plugins


@dataclass
class ZooRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def assert_one_line_error(self, *fragments: str) -> None:
        """The CLI failed with exactly one line on stderr, no traceback, naming each fragment."""
        assert self.returncode != 0, f"expected failure, got exit 0; stdout: {self.stdout}"
        assert "Traceback" not in self.stderr, self.stderr
        assert len(self.stderr_lines) == 1, self.stderr
        for fragment in fragments:
            assert fragment in self.stderr, f"{fragment!r} not in: {self.stderr}"


def run_zoo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 300) -> ZooRun:
    """``python -m zoo_core ARGS`` in a fresh process (what a user's shell runs)."""
    proc = subprocess.run([sys.executable, "-m", "zoo_core", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)
    return ZooRun(proc.returncode, proc.stdout, proc.stderr)


def make_plugin(site: Path, dist: str, files: dict[str, str], entry_points: dict[str, str],
                version: str = "0.1.0") -> Path:
    """Write a distribution `dist` into folder `site`: its `files` (path -> source) and a dist-info whose ``zoo``
    entry points are `entry_points` (name -> module). Returns `site`, for PYTHONPATH."""
    for rel, source in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[zoo]\n" + "".join(f"{name} = {module}\n" for name, module in entry_points.items()))
    return site


@pytest.fixture
def fresh_plugins():
    """Forget loaded plugins before and after a test that changes what is installed or allowed."""
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(name="zoo")
def zoo_fixture():
    """The `run_zoo` function: ``zoo("list", "--json")``."""
    return run_zoo


@pytest.fixture(name="plugin_factory")
def plugin_factory_fixture():
    """The `make_plugin` function."""
    return make_plugin


@pytest.fixture
def cli(capsys):
    """Run the CLI in this process (fast: torch is already imported): ``cli("train", "nope")`` -> ZooRun."""
    from zoo_core.cli import main

    def run(*args: str) -> ZooRun:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return ZooRun(exit_info.value.code or 0, out, err)

    return run
