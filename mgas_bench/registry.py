"""Loads plugins from entry points and keeps the components they register.

Everything is checked when the registry is built, so a broken plugin stops the
program at start-up with its name in the message rather than in the middle of a
suite: unknown or mistyped hook implementations, duplicate component names, and
components that lack a required member.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from mgas_bench import hookspecs
from mgas_bench.components import KINDS, ComponentLookup, UnknownComponentError

ENTRY_POINT_GROUP = "mgas_bench"

# Which registration hook fills which kind.
REGISTRATION_HOOKS: dict[str, str] = {
    "method": "register_methods",
    "search_space": "register_search_spaces",
    "granularity": "register_granularities",
    "discretizer": "register_discretizers",
    "pruner": "register_pruners",
    "dataset": "register_datasets",
    "architecture_format": "register_architecture_formats",
}


class PluginError(RuntimeError):
    """A plugin is broken; the message names it."""


@dataclass(frozen=True)
class Provider:
    plugin: str  # pluggy plugin name (the entry point's name for installed plugins)
    package: str  # distribution that provides it
    version: str


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    component: Any
    provider: Provider


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_entry_point_plugins(pm: pluggy.PluginManager) -> dict[str, Provider]:
    """Register every plugin of the entry-point group, naming the culprit on failure.

    Returns who provides each plugin, by plugin name.
    """
    providers = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "-"
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} (from {dist}) failed to import {ep.value}: {exc}"
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {ep.name!r} (from {dist}) has a bad hook implementation: {_one_line(exc)}"
            ) from exc
        providers[ep.name] = Provider(ep.name, dist, version)
    return providers


def _check_unknown_hooks(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        hooks = ", ".join(sorted(hookspecs.HOOK_NAMES))
        raise PluginError(
            f"plugin {name!r} implements a hook mgas_bench does not define "
            f"({_one_line(exc)}); known hooks: {hooks}"
        ) from exc


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _provider_of(
    pm: pluggy.PluginManager, plugin: object, providers: dict[str, Provider]
) -> Provider:
    name = pm.get_name(plugin) or repr(plugin)
    return providers.get(name) or Provider(name, "(not installed)", "-")


class Registry(ComponentLookup):
    """All registered components by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, registrations: Iterable[Registration]):
        self.pm = pm
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        for reg in registrations:
            known = self._by_kind[reg.kind]
            if reg.name in known:
                first = known[reg.name].provider
                raise PluginError(
                    f"plugin {reg.provider.plugin!r} ({reg.provider.package}) registers "
                    f"{reg.kind} {reg.name!r}, which plugin {first.plugin!r} "
                    f"({first.package}) already registered; component names must be unique"
                )
            known[reg.name] = reg

    def get(self, kind: str, name: str) -> Any:
        return self.registration(kind, name).component

    def registration(self, kind: str, name: str) -> Registration:
        if kind not in self._by_kind:
            raise UnknownComponentError("component kind", kind, list(self._by_kind))
        try:
            return self._by_kind[kind][name]
        except KeyError:
            raise UnknownComponentError(kind, name, self.names(kind)) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def registrations(self) -> list[Registration]:
        return [reg for kind in KINDS for _, reg in sorted(self._by_kind[kind].items())]

    @property
    def hook(self) -> Any:
        return self.pm.hook


def _collect(pm: pluggy.PluginManager, providers: dict[str, Provider]) -> list[Registration]:
    registrations = []
    for kind, hook_name in REGISTRATION_HOOKS.items():
        caller = getattr(pm.hook, hook_name)
        # Called one implementation at a time so that each component is
        # attributed to the plugin that returned it.
        for impl in caller.get_hookimpls():
            provider = _provider_of(pm, impl.plugin, providers)
            try:
                components = list(impl.function() or ())
            except Exception as exc:
                raise PluginError(
                    f"plugin {provider.plugin!r} ({provider.package}) failed in {hook_name}: {exc}"
                ) from exc
            for component in components:
                _check_component(kind, component, provider)
                registrations.append(Registration(kind, component.name, component, provider))
    return registrations


def _check_component(kind: str, component: Any, provider: Provider) -> None:
    required = KINDS[kind].REQUIRED
    missing = [m for m in required if not hasattr(component, m)]
    label = getattr(component, "name", type(component).__name__)
    if missing:
        raise PluginError(
            f"plugin {provider.plugin!r} ({provider.package}) registers {kind} {label!r} "
            f"without required member(s): {', '.join(missing)}"
        )
    not_callable = [
        m for m in required if m not in _DATA_MEMBERS and not callable(getattr(component, m))
    ]
    if not_callable:
        raise PluginError(
            f"plugin {provider.plugin!r} ({provider.package}) registers {kind} {label!r} "
            f"whose {', '.join(not_callable)} must be callable"
        )
    if not isinstance(component.name, str) or not component.name:
        raise PluginError(
            f"plugin {provider.plugin!r} ({provider.package}) registers a {kind} with "
            f"an empty or non-string name: {component.name!r}"
        )


_DATA_MEMBERS = frozenset({"name", "description", "granularity", "granularities"})


def build_registry(extra_plugins: Iterable[tuple[str, object]] = ()) -> Registry:
    """Load all entry-point plugins (plus ``extra_plugins``, for tests) and check them."""
    pm = new_plugin_manager()
    for name, plugin in extra_plugins:
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {name!r} has a bad hook implementation: {_one_line(exc)}"
            ) from exc
    providers = load_entry_point_plugins(pm)
    _check_unknown_hooks(pm)
    registry = Registry(pm, _collect(pm, providers))
    _check_discretizer_granularities(registry)
    return registry


def _check_discretizer_granularities(registry: Registry) -> None:
    granularities = registry.names("granularity")
    for name in registry.names("discretizer"):
        reg = registry.registration("discretizer", name)
        if reg.component.granularity not in granularities:
            raise PluginError(
                f"plugin {reg.provider.plugin!r} ({reg.provider.package}) registers discretizer "
                f"{name!r} for granularity {reg.component.granularity!r}, which no plugin "
                f"registers; known granularities: {', '.join(granularities)}"
            )
