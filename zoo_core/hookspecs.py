"""The hooks a zoo plugin implements (pluggy project ``"zoo"``).

A plugin is a module exposed through the ``zoo`` entry-point group::

    # pyproject.toml
    [project.entry-points.zoo]
    cnn = "zoo_cnn.plugin"

    # zoo_cnn/plugin.py
    from zoo_core import ModelSpec, hookimpl

    @hookimpl
    def zoo_register_models(register):
        register(ModelSpec(name="lenet", builder="zoo_cnn.lenet:LeNet", ...))

The core's own datasets are registered through these same hooks (`zoo_core.core_plugin`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from zoo_core.registry import DataSpec, ModelSpec

PROJECT = "zoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register this plugin's models: call ``register(ModelSpec(...))`` once per model.

    Keep the plugin module free of torch and model imports: a spec names its builder as a string
    (``"package.module:Class"``) so that ``zoo list`` and ``zoo info`` never import model code.
    """


@hookspec
def zoo_register_datasets(register: Callable[[DataSpec], None]) -> None:
    """Register this plugin's datasets: call ``register(DataSpec(...))`` once per dataset.

    Like models, a dataset names its `DataModule` class as a string, imported only when the data is built.
    """


@hookspec
def zoo_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``zoo`` command line: ``cli.command()`` / ``cli.group()`` on the click group given.

    As in simonw/llm's ``register_commands``. A command's module is imported with the plugin, so import torch inside
    the command function, not at module level: ``zoo list`` must stay fast. A name already taken is an error.
    """
