"""Loading plugins: the built-in one, then every entry point of group ``zoo``, each isolated from the others.

- ``ZOO_PLUGINS`` (comma-separated distribution names) limits which installed plugins load; set but empty, none
  does. The built-in plugin (the core's datasets) always loads.
- A plugin that fails to import, implements an unknown hook, or raises while registering is *broken*: it is
  unregistered, whatever it registered is dropped, and it is reported (``zoo plugins``, and a warning on the CLI's
  stderr; ``zoo --debug plugins`` shows the traceback); the other plugins work.
- A name belongs to the first plugin that registers it. Plugins register in a fixed order: the built-in plugin, then
  the zoo's own plugins (distributions named ``zoo-*``), then the others, each group alphabetically by distribution.
  A later plugin that registers a taken model or dataset name is refused like a broken plugin, and its error names
  the name and the plugin that has it. So a third-party plugin can never change what ``zoo train softmax`` trains,
  and the outcome does not depend on the order things were installed in.
- A name in ``ZOO_PLUGINS`` that is no installed plugin is reported (as a plugin that is "not installed").

Hooks are called one plugin at a time (rather than through pluggy's one-shot call) so that every spec knows which
plugin registered it and one plugin's failure does not take the others' registrations with it.
"""

from __future__ import annotations

import importlib
import os
import re
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from zoo_core import hookspecs
from zoo_core.registry import DataSpec, DuplicateNameError, ModelSpec, Registry

ENTRY_POINT_GROUP = "zoo"
ALLOWLIST_ENV = "ZOO_PLUGINS"
BUILTIN_PLUGINS = ("zoo_core.core_plugin",)
CORE_DISTRIBUTION = "zoo-core"
FIRST_PARTY_PREFIX = "zoo-"
"""Distributions named ``zoo-*`` are the zoo's own (its chapters): they register before third-party plugins."""


@dataclass
class PluginInfo:
    """One plugin as ``zoo plugins`` shows it."""

    name: str
    version: str
    module: str
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None  # of the exception behind `error`, for ``zoo --debug plugins``
    installed: bool = True        # False: ZOO_PLUGINS names a distribution that is no installed zoo plugin

    @property
    def broken(self) -> bool:
        return self.error is not None

    def fail(self, e: BaseException) -> None:
        """Mark the plugin broken by exception `e` (call from its ``except`` block: keeps the traceback)."""
        self.error = _error_line(e)
        self.traceback = traceback.format_exc()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "module": self.module, "builtin": self.builtin,
                "installed": self.installed, "hooks": self.hooks, "models": self.models, "datasets": self.datasets,
                "commands": self.commands, "error": self.error}


@dataclass
class ZooState:
    """The loaded plugin manager, the registry it filled, and every plugin's report."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]

    @property
    def broken(self) -> list[PluginInfo]:
        """Plugins that did not load, the not-installed ones that ``ZOO_PLUGINS`` names included."""
        return [p for p in self.plugins if p.broken]

    def unknown_name_hint(self) -> str:
        """Why a name may be unknown, for an "unknown model" error: the plugins that failed to load or are missing."""
        missing = [p.name for p in self.broken if not p.installed]
        broken = [p.name for p in self.broken if p.installed]
        parts = []
        if missing:
            parts.append(f"{ALLOWLIST_ENV} names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"not installed")
        if broken:
            parts.append("broken plugins that may provide it: " + ", ".join(broken))
        return "; ".join(parts)


def normalize(name: str) -> str:
    """A distribution name in PEP 503 normal form (``Zoo_Linear`` -> ``zoo-linear``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowlist() -> set[str] | None:
    """The distributions ``ZOO_PLUGINS`` allows, or None when it is unset (all)."""
    value = os.environ.get(ALLOWLIST_ENV)
    if value is None:
        return None
    return {normalize(n.strip()) for n in value.split(",") if n.strip()}


def _error_line(e: BaseException) -> str:
    text = " ".join(str(e).split())  # one line, whatever the exception's message looks like
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _register(manager: pluggy.PluginManager, module: Any, info: PluginInfo) -> None:
    """Register `module`; a hook no hookspec declares is an error (pluggy's `check_pending`, for this plugin alone)."""
    manager.register(module, name=info.name)
    callers = manager.get_hookcallers(module) or []
    unknown = sorted(hc.name for hc in callers
                     if not hc.has_spec() and not all(impl.optionalhook for impl in hc.get_hookimpls()))
    if unknown:
        manager.unregister(module)
        raise pluggy.PluginValidationError(module, f"unknown hook(s) {', '.join(unknown)}")
    info.hooks = sorted(hc.name for hc in callers)


def _distribution(ep: metadata.EntryPoint) -> str:
    return normalize(ep.dist.name) if ep.dist else ep.name


def _precedence(ep: metadata.EntryPoint) -> tuple[bool, str, str]:
    """The order plugins register in, which decides who keeps a name two of them register: the zoo's own
    distributions (``zoo-*``) first, then the others; alphabetically within each group."""
    dist = _distribution(ep)
    return not dist.startswith(FIRST_PARTY_PREFIX), dist, ep.name


def _discover(manager: pluggy.PluginManager) -> list[PluginInfo]:
    from zoo_core import __version__

    infos = []
    for module_name in BUILTIN_PLUGINS:
        info = PluginInfo(CORE_DISTRIBUTION, __version__, module_name, builtin=True)
        _register(manager, importlib.import_module(module_name), info)
        infos.append(info)

    allowed = allowlist()
    entry_points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_precedence)
    for ep in entry_points:
        dist = _distribution(ep)
        if allowed is not None and dist not in allowed:
            continue
        name = dist if sum(1 for e in entry_points if e.dist == ep.dist) == 1 else f"{dist}:{ep.name}"
        info = PluginInfo(name, ep.dist.version if ep.dist else "?", ep.value)
        infos.append(info)
        try:
            _register(manager, ep.load(), info)
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the zoo
            info.fail(e)
    found = {_distribution(ep) for ep in entry_points} | {CORE_DISTRIBUTION}
    for dist in sorted((allowed or set()) - found):
        infos.append(PluginInfo(dist, "-", "-", installed=False, error=(
            f"{ALLOWLIST_ENV} names it, but no installed distribution of that name has a '{ENTRY_POINT_GROUP}' "
            f"entry point")))
    return infos


def _collect(manager: pluggy.PluginManager, infos: list[PluginInfo]) -> Registry:
    """Call each plugin's registration hooks in turn (in the plugins' precedence order, whatever pluggy's
    ``tryfirst``/``trylast`` say); commit what a plugin registered only if it raised nothing and took no name that
    an earlier plugin has."""
    registry = Registry()
    order = {info.name: i for i, info in enumerate(infos)}
    by_name = {info.name: info for info in infos}
    for hook_name, table, kind in (("zoo_register_datasets", "datasets", DataSpec),
                                   ("zoo_register_models", "models", ModelSpec)):
        impls = sorted(getattr(manager.hook, hook_name).get_hookimpls(), key=lambda impl: order[impl.plugin_name])
        for impl in impls:
            info = by_name[impl.plugin_name]
            if info.broken:
                continue
            specs: list = []

            def register(spec: Any, _specs: list = specs, _kind: type = kind) -> None:
                if not isinstance(spec, _kind):
                    raise TypeError(f"register() takes a {_kind.__name__}, got {type(spec).__name__}")
                _specs.append(spec)

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except Exception as e:  # noqa: BLE001
                info.fail(e)
                continue
            add = registry.add_model if kind is ModelSpec else registry.add_dataset
            added: list[str] = []
            try:
                for spec in specs:
                    add(spec, info.name)
                    added.append(spec.name)
            except DuplicateNameError as e:
                for name in added:  # all or nothing: the plugin is refused
                    getattr(registry, table).pop(name)
                info.error = (f"{e.kind} {e.name!r} is registered twice by this plugin" if e.owner == info.name
                              else f"refused: {e.kind} name {e.name!r} belongs to plugin {e.owner}, which "
                                   f"registered it first")
                continue
            getattr(info, table).extend(added)
    for info in infos:
        if info.broken:  # a plugin that broke in a later hook loses what it registered in an earlier one
            for name in info.datasets:
                registry.datasets.pop(name, None)
            for name in info.models:
                registry.models.pop(name, None)
            info.models, info.datasets = [], []
            try:
                manager.unregister(name=info.name)
            except ValueError:
                pass
    return registry


_state: ZooState | None = None


def load() -> ZooState:
    """Load every allowed plugin once per process (`reset` forgets it, for tests)."""
    global _state
    if _state is None:
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        infos = _discover(manager)
        _state = ZooState(manager, _collect(manager, infos), infos)
    return _state


def register_commands(group: Any) -> None:
    """Let each plugin add subcommands to the click `group` (hook ``zoo_register_commands``), once per group.

    A plugin whose hook raises, or that takes a command name already in use, is reported as broken; the commands
    it added are removed and the other plugins' stay.
    """
    state = load()
    if getattr(group, "_zoo_plugin_commands", False):
        return
    group._zoo_plugin_commands = True
    by_name = {info.name: info for info in state.plugins}
    for impl in state.manager.hook.zoo_register_commands.get_hookimpls():
        info = by_name[impl.plugin_name]
        if info.broken:
            continue
        before = dict(group.commands)
        try:
            impl.function(**{arg: group for arg in impl.argnames})
            taken = sorted(name for name in before if group.commands.get(name) is not before[name])
            if taken:
                raise ValueError(f"command name(s) {', '.join(taken)} already in use")
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the zoo
            info.fail(e)
            group.commands.clear()
            group.commands.update(before)
            continue
        info.commands = sorted(set(group.commands) - set(before))


def loaded() -> ZooState | None:
    """The plugins loaded so far in this process, without loading them."""
    return _state


def reset() -> None:
    """Forget the loaded plugins, so that the next `load` re-reads entry points and ``ZOO_PLUGINS``."""
    global _state
    _state = None

