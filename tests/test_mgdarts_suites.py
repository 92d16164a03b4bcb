"""The MG-DARTS suite files in the repository expand into valid runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgas_bench.config import expand_suite, load_suite

SUITES = Path(__file__).parents[1] / "plugins" / "mgdarts" / "suites"


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.toml")), ids=lambda p: p.name)
def test_suite_expands(path, registry):
    runs = expand_suite(load_suite(path), registry)  # unknown option keys would raise
    assert runs and {run.method for run in runs} == {"mg-darts"}
    assert len({run.run_id() for run in runs}) == len(runs)


def test_ablation_suite_toggles_each_switch_over_three_seeds(registry):
    runs = expand_suite(load_suite(SUITES / "ablation.toml"), registry)
    variants = {run.variant: run.options for run in runs}
    full = variants.pop("full")
    changed = {key for options in variants.values() for key in options if options[key] != full[key]}
    assert {"regrowth", "adaptive_pruning", "stages", "granularities"} <= changed
    assert all(sum(r.variant == v for r in runs) == 3 for v in [*variants, "full"])
