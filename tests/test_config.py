from __future__ import annotations

import pytest

from mgas_bench.components import UnknownComponentError
from mgas_bench.config import (
    DEFAULT_SUITE,
    ConfigError,
    expand_suite,
    load_suite,
    parse_assignments,
    parse_suite,
)


def test_default_suite_runs_the_baselines_mg_darts_and_nni_darts_on_digits(registry):
    suite = load_suite(None)
    configs = expand_suite(suite, registry)
    assert DEFAULT_SUITE.exists()
    expected = {"darts", "darts-2nd", "mg-darts", "nni-darts"}
    if registry.get("method", "nni-darts").unavailable_reason():
        expected.remove("nni-darts")  # skipped where NNI is not installed
    assert {c.method for c in configs} == expected
    assert {c.dataset for c in configs} == {"digits"}
    assert sorted({c.seed for c in configs}) == [0, 1]
    assert len({c.run_id() for c in configs}) == len(configs)


def test_expansion_order_and_overrides(registry):
    suite = parse_suite(
        {
            "methods": ["darts"],
            "seeds": [3, 5],
            "budget": "smoke",
            "search": {"epochs": 7},
            "options": {"darts": {"arch_lr": 0.01}},
            "variants": [{"name": "a"}, {"name": "b", "options": {"grad_clip": 1.0}}],
        }
    )
    configs = expand_suite(suite, registry)
    assert [(c.variant, c.seed) for c in configs] == [("a", 3), ("a", 5), ("b", 3), ("b", 5)]
    assert all(c.search.epochs == 7 and c.search.cells == 3 for c in configs)
    assert all(c.options["arch_lr"] == 0.01 for c in configs)
    assert [c.options["grad_clip"] for c in configs] == [5.0, 5.0, 1.0, 1.0]


def test_variant_limited_to_some_methods(registry):
    suite = parse_suite(
        {
            "methods": ["darts", "darts-2nd"],
            "seeds": 1,
            "variants": [{"name": "base"}, {"name": "slow", "methods": ["darts"]}],
        }
    )
    pairs = [(c.method, c.variant) for c in expand_suite(suite, registry)]
    assert pairs == [("darts", "base"), ("darts", "slow"), ("darts-2nd", "base")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"budget": "huge"}, "unknown budget 'huge'; known budgets: smoke, small"),
        ({"methods": ["darts"], "options": {"darts": {"arch_lr2": 1}}}, "its options: arch_lr"),
        ({"methods": ["darts"], "options": {"nni": {}}}, "not in this suite"),
        ({"methods": ["darts"], "eval": {"epochs": -1}}, "eval.epochs"),
    ],
)
def test_bad_suites_say_what_is_wrong(registry, raw, message):
    with pytest.raises(ConfigError, match=message):
        expand_suite(parse_suite(raw), registry)


def test_unknown_names_list_the_known_ones(registry):
    with pytest.raises(UnknownComponentError, match="known methods: darts, darts-2nd"):
        expand_suite(parse_suite({"methods": ["dart"]}), registry)
    with pytest.raises(UnknownComponentError, match="known datasets: cifar10, cifar100, digits"):
        expand_suite(parse_suite({"datasets": ["mnist"]}), registry)


def test_suite_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("methods = [darts")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('method = ["darts"]\n')
    with pytest.raises(ConfigError, match="method: Extra inputs are not permitted"):
        load_suite(typo)
    with pytest.raises(ConfigError, match='"available"'):
        parse_suite({"methods": "all"})


def test_command_line_assignments():
    assert parse_assignments(["a=1", "b=0.5", "c=true", "d=darts-noskip", "e=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "darts-noskip",
        "e": [1, 2],
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["novalue"])
