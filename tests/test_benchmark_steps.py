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


def test_gpu_throughput_script_runs_tiny_on_the_cpu(tmp_path, capsys):
    from benchmarks import gpu_throughput

    out = tmp_path / "table.md"
    rows = "darts,mg-darts-3-stages,eval-darts-v2"
    gpu_throughput.main(
        ["--device", "cpu", "--tiny", "--steps", "1", "--rows", rows, "--out", str(out)]
    )
    table = out.read_text().splitlines()
    measured = [line for line in table if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0:2] for line in measured] == [
        [f"| {row}", precision]
        for row in rows.split(",")
        for precision in ("fp32", "bf16 autocast")
    ]
    # fp32 rows count the step's operator calls; a multi-stage row is a mean over stages.
    assert all(int(line.split(" | ")[4].strip(" |").replace(",", "")) > 0 for line in measured[::2])


def test_gpu_throughput_refuses_an_unknown_row():
    from benchmarks import gpu_throughput

    with pytest.raises(SystemExit):
        gpu_throughput.main(["--device", "cpu", "--tiny", "--rows", "darts,warp-drive"])
