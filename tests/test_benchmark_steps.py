"""The benchmarks' steps stay runnable: each row's step, once, on a tiny supernet."""

from __future__ import annotations

import pytest

from benchmarks.steps import SEARCH_ROWS, eval_step, search_steps
from mgas_bench.components import SupernetSpec

TINY = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=2)


@pytest.mark.parametrize("row", SEARCH_ROWS)
def test_every_search_row_steps(row):
    if row.startswith("nni"):
        pytest.importorskip("nni")
    steps = search_steps(row, TINY, size=4)
    assert len(steps) == (3 if row == "mg-darts-3-stages" else 1)
    for step in steps:
        step()


@pytest.mark.parametrize("row", ["darts", "mg-darts-1-stage"])
def test_evaluation_steps_run(row):
    eval_step(row, size=4)()
