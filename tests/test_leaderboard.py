from __future__ import annotations

import math

import pandas as pd
import pytest

from mgas_bench.leaderboard import (
    ablation_table,
    load_runs,
    pareto_front,
    summarise,
    write_leaderboard,
)
from mgas_bench.records import write_json_atomic


def _store(results, run_id, method, seed, acc, params, status="ok", variant="default"):
    write_json_atomic(
        results / "runs" / run_id / "record.json",
        {
            "run_id": run_id,
            "method": method,
            "dataset": "digits",
            "seed": seed,
            "variant": variant,
            "status": status,
            "metrics": {
                "test_accuracy": acc,
                "params_m": params,
                "macs_m": 10 * params,
                "search_seconds": 5.0 + seed,
                "search_peak_mem_mb": 100.0,
            },
        },
    )


@pytest.fixture
def results(tmp_path):
    _store(tmp_path, "a0", "big", 0, 0.96, 2.0)
    _store(tmp_path, "a1", "big", 1, 0.98, 2.0)
    _store(tmp_path, "b0", "small", 0, 0.90, 0.5)
    _store(tmp_path, "b1", "small", 1, 0.92, 0.5)
    _store(tmp_path, "c0", "dominated", 0, 0.80, 3.0)
    _store(tmp_path, "d0", "failed", 0, 0.99, 0.1, status="failed")
    _store(tmp_path, "e0", "big", 0, 0.50, 1.0, variant="ablated")
    (tmp_path / "runs" / "z-corrupt").mkdir()
    (tmp_path / "runs" / "z-corrupt" / "record.json").write_text("{not json")
    return tmp_path


def test_summary_has_mean_and_std_over_seeds(results):
    stored = load_runs(results)
    assert stored.not_ok == 1
    assert [p.name for p, _ in stored.unreadable] == ["z-corrupt"]
    table = summarise(stored.runs).set_index(["method", "variant"])
    big = table.loc[("big", "default")]
    assert big["n"] == 2
    assert big["test_accuracy_mean"] == pytest.approx(0.97)
    assert big["test_accuracy_std"] == pytest.approx(pd.Series([0.96, 0.98]).std())
    assert big["search_seconds_mean"] == pytest.approx(5.5)
    assert table.loc[("big", "ablated")]["n"] == 1
    assert math.isnan(table.loc[("dominated", "default")]["test_accuracy_std"])
    assert "failed" not in table.index.get_level_values("method")


def test_pareto_front_drops_dominated_rows(results):
    table = summarise(load_runs(results).runs)
    front = pareto_front(table)
    # (params, acc): small (0.5, .91) and big (2.0, .97) are on the front; big/ablated
    # (1.0, .50) has more parameters than small and less accuracy; dominated (3.0, .80) too.
    assert list(zip(front["method"], front["variant"], strict=True)) == [
        ("small", "default"),
        ("big", "default"),
    ]


def test_written_files(results, tmp_path):
    files = write_leaderboard(results)
    text = files.markdown.read_text()
    assert "97.00 ± 1.41" in text  # accuracy in percent, mean ± std
    assert text.index("| big") < text.index("| small") < text.index("| dominated")
    csv = pd.read_csv(files.csv)
    assert set(csv["method"]) == {"big", "small", "dominated"}
    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_results_folder(tmp_path):
    files = write_leaderboard(tmp_path)
    assert "no completed runs" in files.markdown.read_text()
    assert files.plot is None


def test_ablation_table_compares_each_variant_with_the_reference(tmp_path):
    _store(tmp_path, "f0", "m", 0, 0.98, 0.10, variant="full")
    _store(tmp_path, "f1", "m", 1, 0.96, 0.10, variant="full")
    _store(tmp_path, "n0", "m", 0, 0.95, 0.05, variant="no-x")
    _store(tmp_path, "o0", "other", 0, 0.50, 1.0)  # no "full" variant: left out
    files = write_leaderboard(tmp_path, against="full")
    table = ablation_table(summarise(load_runs(tmp_path).runs), "full")
    assert set(table["method"]) == {"m"}
    row = table[table["variant"] == "no-x"].iloc[0]
    assert row["Δ acc (pts)"] == "-2.00"  # 95 against the mean of 98 and 96
    assert row["Δ params (%)"] == "-50"
    assert row["Δ time (%)"] == "-9"  # 5 s against the mean of 5 s and 6 s
    assert row["Δ mem (%)"] == "+0"
    assert table[table["variant"] == "full"].iloc[0]["Δ acc (pts)"] == "+0.00"
    assert "no-x" in files.ablation.read_text()


def test_records_without_surviving_parameters_count_all_parameters(results):
    table = summarise(load_runs(results).runs)
    assert (table["params_nonzero_m_mean"] == table["params_m_mean"]).all()
