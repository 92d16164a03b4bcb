"""Speed benchmarks (run with `tox -e bench`, not with the unit tests).

Every method's search step and evaluation training step on the digits default suite's
size (``benchmarks/steps.py``), and every method's whole digits search. pytest-benchmark
reports the timings; nothing here asserts a speed. ``python -m benchmarks.perf_table``
prints the same figures, plus peak memory, as one table of ratios to DARTS.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from benchmarks.perf_table import search_suite
from benchmarks.steps import SEARCH_ROWS, eval_step, search_steps


def _needs(row: str) -> None:
    if row.startswith("nni"):
        pytest.importorskip("nni")


@pytest.mark.parametrize("row", SEARCH_ROWS)
def test_search_step(benchmark, row):
    _needs(row)
    # A multi-stage search has one step per stage: the rounds cycle through them, so the
    # mean is the mean over stages.
    steps = search_steps(row)
    cycle = itertools.cycle(steps)
    benchmark.pedantic(lambda: next(cycle)(), rounds=3 * len(steps), warmup_rounds=len(steps))


@pytest.mark.parametrize("row", ["darts", "mg-darts-1-stage"])
def test_eval_train_step(benchmark, row):
    benchmark.pedantic(eval_step(row), rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("row", SEARCH_ROWS)
def test_digits_search(benchmark, row, tmp_path):
    """The whole search of the digits default suite (budget small, seed 0), evaluation skipped."""
    _needs(row)
    suite = tmp_path / "suite.toml"
    suite.write_text(search_suite([row]))
    command = [sys.executable, "-m", "mgas_bench", "run", str(suite), "--threads", "1"]

    def search() -> None:
        results = tmp_path / f"results-{len(list(tmp_path.iterdir()))}"
        subprocess.run([*command, "--results", str(results)], check=True, capture_output=True)

    benchmark.pedantic(search, rounds=1, iterations=1)
