from __future__ import annotations

import pytest
import torch

from mgas_bench.components import Discretizer, UnknownComponentError
from mgas_bench.hookspecs import hookimpl
from mgas_bench.registry import PluginError, build_registry


def test_builtins_register_through_entry_points(registry):
    # The host imports no built-in by name: all of these arrive via the entry-point group.
    assert {"darts", "darts-2nd"} <= set(registry.names("method"))
    assert {"digits", "cifar10", "cifar100", "imagenet"} <= set(registry.names("dataset"))
    assert {"operation", "filter", "weight"} <= set(registry.names("granularity"))
    assert "darts-genotype" in registry.names("architecture_format")
    reg = registry.registration("method", "darts")
    assert reg.provider.package == "mgas-bench"
    assert reg.provider.plugin == "darts"


def test_unknown_name_lists_known_ones(registry):
    with pytest.raises(UnknownComponentError) as err:
        registry.get("method", "dartz")
    message = str(err.value)
    assert "unknown method 'dartz'" in message
    assert "darts, darts-2nd" in message


class _Plugin:
    """A hook implementation object; tests register instances under their own names."""


def _plugin(**hooks):
    plugin = _Plugin()
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


class _Noop(Discretizer):
    granularity = "operation"
    description = "test"

    def __init__(self, name):
        self.name = name

    def discretize(self, group, options):
        return torch.ones_like(group.scores, dtype=torch.bool)


def test_duplicate_name_names_both_plugins():
    plugin = _plugin(register_discretizers=lambda: [_Noop("darts-top2")])
    with pytest.raises(PluginError) as err:
        build_registry([("clashing", plugin)])
    message = str(err.value)
    assert "'clashing'" in message and "'darts'" in message
    assert "discretizer 'darts-top2'" in message


def test_component_missing_required_method():
    class Incomplete:
        name = "half-done"
        description = "has no discretize"
        granularity = "operation"

    plugin = _plugin(register_discretizers=lambda: [Incomplete()])
    with pytest.raises(PluginError, match=r"'broken'.*'half-done'.*discretize"):
        build_registry([("broken", plugin)])


def test_hook_with_wrong_signature_names_the_plugin():
    plugin = _plugin(register_methods=lambda surprise: [])
    with pytest.raises(PluginError, match=r"'wrong-args'.*surprise"):
        build_registry([("wrong-args", plugin)])


def test_unknown_hook_name_names_the_plugin():
    plugin = _plugin(register_method=lambda: [])  # missing "s"
    with pytest.raises(PluginError, match=r"wrong-hook.*register_method"):
        build_registry([("wrong-hook", plugin)])


def test_failing_registration_hook_names_the_plugin():
    def explode():
        raise RuntimeError("boom")

    plugin = _plugin(register_datasets=explode)
    with pytest.raises(PluginError, match=r"'exploding'.*register_datasets.*boom"):
        build_registry([("exploding", plugin)])


def test_discretizer_for_an_unregistered_granularity():
    orphan = _Noop("orphan")
    orphan.granularity = "kernel-rows"
    plugin = _plugin(register_discretizers=lambda: [orphan])
    with pytest.raises(
        PluginError, match=r"'lonely'.*'orphan'.*'kernel-rows'.*known granularities"
    ):
        build_registry([("lonely", plugin)])
