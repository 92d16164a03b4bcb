"""The command line end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datafiles import DARTS_V2_JSON as DARTS_V2


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "mgas_bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def test_tiny_suite_end_to_end(tmp_path):
    args = ("run", "--budget", "smoke", "--seeds", "1", "--methods", "darts")
    first = cli(*args, cwd=tmp_path)
    assert "1 completed, 0 already done, 0 failed" in first.stdout
    assert "| digits    | darts" in first.stdout
    results = tmp_path / "results"
    for name in ("leaderboard.md", "leaderboard.csv", "pareto.png"):
        assert (results / name).stat().st_size > 0
    (run,) = (results / "runs").iterdir()
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "ok"
    assert record["metrics"]["test_accuracy"] > 0.1  # better than chance after a smoke budget
    genotype = json.loads((run / "architecture.json").read_text())
    size = record["config"]["eval"]
    info = cli(
        "arch",
        "info",
        str(run / "architecture.json"),
        "--dataset",
        "digits",
        "--channels",
        str(size["channels"]),
        "--layers",
        str(size["layers"]),
        "--json",
        cwd=tmp_path,
    )
    assert json.loads(info.stdout)["params_m"] == pytest.approx(record["metrics"]["params_m"])
    assert set(genotype) == {"normal", "normal_concat", "reduce", "reduce_concat"}

    again = cli(*args, cwd=tmp_path)
    assert "0 completed, 1 already done, 0 failed" in again.stdout
    board = cli("leaderboard", cwd=tmp_path)
    assert "| digits    | darts" in board.stdout


def test_plugins_lists_builtins_and_the_third_party_plugin(tmp_path):
    rows = json.loads(cli("plugins", "--json", cwd=tmp_path).stdout)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert by_name[("method", "darts")]["status"] == "available"
    assert by_name[("dataset", "digits")]["package"] == "mgas-bench"
    third = by_name[("discretizer", "darts-noskip")]
    assert (third["package"], third["version"], third["plugin"]) == (
        "mgas-example-plugin",
        "0.4.0",
        "example",
    )
    assert by_name[("granularity", "edge")]["package"] == "mgas-example-plugin"
    table = cli("plugins", cwd=tmp_path).stdout
    assert "darts-noskip" in table and "mgas-example-plugin" in table


def test_third_party_discretizer_is_used_by_a_run(tmp_path):
    suite = tmp_path / "noskip.toml"
    suite.write_text(
        'methods = ["darts"]\nseeds = 1\nbudget = "smoke"\n'
        "[eval]\nepochs = 1\n"
        '[options.darts]\ndiscretizer = "darts-noskip"\n'
    )
    cli("run", str(suite), cwd=tmp_path)
    (run,) = (tmp_path / "results" / "runs").iterdir()
    record = json.loads((run / "record.json").read_text())
    assert record["config"]["options"]["discretizer"] == "darts-noskip"
    genotype = json.loads((run / "architecture.json").read_text())
    ops = [op for op, _ in genotype["normal"] + genotype["reduce"]]
    assert len(ops) == 16 and "skip_connect" not in ops and "none" not in ops


def test_arch_info_reproduces_the_darts_paper_count(tmp_path):
    path = tmp_path / "darts_v2.json"
    path.write_text(json.dumps(DARTS_V2))
    out = cli(
        "arch", "info", str(path), "--channels", "36", "--layers", "20", "--json", cwd=tmp_path
    )
    figures = json.loads(out.stdout)
    assert round(figures["params_m"], 2) == 3.35  # DARTS paper: 3.3 M; its counter: 3.35 M
    assert 500 < figures["macs_m"] < 560
    text = cli("arch", "info", str(path), cwd=tmp_path).stdout
    assert "3.349 M" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--methods", "dart"), "unknown method 'dart'; known methods: darts, darts-2nd"),
        (("run", "--datasets", "mnist"), "known datasets: cifar10, cifar100, digits, imagenet"),
        (("run", "--budget", "huge"), "known budgets: smoke, small, medium, paper"),
        (("run", "-o", "darts.arch_lrr=1"), "has no option(s) arch_lrr"),
        (("run", "nope.toml"), "suite file not found: nope.toml"),
        (("run", "--jobs", "2", "--in-process"), "--jobs runs several worker processes"),
        (("run", "--jobs", "2", "--executor", "ray"), "--jobs is for the local executor"),
        (("run", "--precision", "fp8"), "'fp8' is not one of 'fp32', 'bf16'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    done = cli(*args, cwd=tmp_path, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_missing_data_set_fails_that_run_with_where_it_looked(tmp_path):
    done = cli(
        "run",
        "--budget",
        "smoke",
        "--seeds",
        "1",
        "--methods",
        "darts",
        "--datasets",
        "cifar10",
        "--data-root",
        str(tmp_path / "nowhere"),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    (run,) = (tmp_path / "results" / "runs").iterdir()
    error = json.loads((run / "record.json").read_text())["error"]
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in error
    assert "--download" in error


def test_arch_info_rejects_a_broken_genotype(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**DARTS_V2, "normal": [["sep_conv_9x9", 0], ["skip_connect", 1]]}))
    done = cli("arch", "info", str(path), cwd=tmp_path, check=False)
    assert done.returncode != 0
    assert "unknown op 'sep_conv_9x9'" in done.stderr


def test_ctrl_c_keeps_finished_runs_and_the_next_call_resumes(tmp_path):
    """A real SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    args = [sys.executable, "-m", "mgas_bench", "run", "--budget", "smoke", "--methods", "darts"]
    proc = subprocess.Popen(
        [*args, "--seeds", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    runs = tmp_path / "results" / "runs"
    deadline = time.monotonic() + 300

    def statuses() -> list[str]:
        found = []
        for path in runs.glob("*/record.json"):
            try:
                found.append(json.loads(path.read_text())["status"])
            except ValueError:  # never expected: writes are atomic
                found.append("unreadable")
        return found

    # Interrupt once the first run is done and the second has started.
    while sorted(statuses()) != ["ok", "running"]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "completed runs are kept" in stderr
    assert sorted(statuses()) == ["failed", "ok"]
    errors = [json.loads(p.read_text())["error"] for p in runs.glob("*/record.json")]
    assert "interrupted" in errors

    resumed = cli("run", "--budget", "smoke", "--methods", "darts", "--seeds", "2", cwd=tmp_path)
    assert "1 completed, 1 already done, 0 failed" in resumed.stdout
    assert statuses() == ["ok", "ok"]


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not beside the repo")
def test_arch_info_reads_the_official_mg_darts_format(tmp_path):
    out = cli(
        "arch",
        "info",
        str(REFERENCE / "mg_darts_small_genotype.json"),
        "--masks",
        str(REFERENCE / "mg_darts_small_masks.pt"),
        "--channels",
        "24",
        "--json",
        cwd=tmp_path,
    )
    figures = json.loads(out.stdout)
    assert figures["format"] == "mg-darts-genotype"
    assert round(figures["params_m"], 2) == 0.70  # ALGORITHM.md G.2
    # The released masks remove 6,940 sep/dil conv weights.
    assert round((figures["params_m"] - figures["params_nonzero_m"]) * 1e6) == 6940
    text = cli(
        "arch",
        "info",
        str(REFERENCE / "mg_darts_small_genotype.json"),
        "--channels",
        "24",
        cwd=tmp_path,
    ).stdout
    assert "depth from the file" in text
