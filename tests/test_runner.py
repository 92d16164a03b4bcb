"""The runner and the results store, with a stand-in method so that each run takes seconds.

The stand-in skips the search and returns a fixed genotype; everything after
the search (saving, the real evaluator, records, failure handling) is the real
code. Real DARTS searches run in test_cli.py and test_darts_search.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from mgas_bench import records
from mgas_bench.components import Architecture, Method, SearchResult
from mgas_bench.config import expand_suite, parse_suite
from mgas_bench.execution import execute_run
from mgas_bench.hookspecs import hookimpl
from mgas_bench.leaderboard import load_runs
from mgas_bench.locks import RunLocked, is_locked
from mgas_bench.records import (
    RECORD,
    ResultsWriteError,
    read_record,
    run_dir,
    write_json_atomic,
)
from mgas_bench.registry import build_registry
from mgas_bench.runner import pending_runs, run_suite, settle_record

GENOTYPE = {
    "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]] * 4,
    "reduce_concat": [2, 3, 4, 5],
}


class FixedGenotype(Method):
    """Returns GENOTYPE, or raises what it is told to, after reporting one epoch."""

    description = "test stand-in"

    def __init__(self, name: str, raises: BaseException | None = None):
        self.name, self.raises = name, raises

    def default_options(self):
        return {"note": ""}

    def search(self, ctx):
        ctx.epoch_ended(1, {"train_loss": 1.0})
        if self.raises is not None:
            raise self.raises
        return SearchResult(Architecture("darts-genotype", GENOTYPE), {"custom": 7.0})


class StandIns:
    @hookimpl
    def register_methods(self):
        return [
            FixedGenotype("fixed"),
            FixedGenotype("broken", RuntimeError("search exploded")),
            FixedGenotype("ctrl-c", KeyboardInterrupt()),
        ]


@pytest.fixture(scope="module")
def test_registry():
    return build_registry([("stand-ins", StandIns())])


def _configs(registry, methods, seeds=1, **extra):
    suite = parse_suite(
        {"methods": methods, "datasets": ["digits"], "seeds": seeds, "budget": "smoke", **extra}
    )
    return expand_suite(suite, registry)


def test_execute_run_writes_a_complete_record(tmp_path, test_registry):
    (config,) = _configs(test_registry, ["fixed"])
    record = execute_run(config, tmp_path, test_registry)
    folder = run_dir(tmp_path, config)
    assert record == json.loads((folder / RECORD).read_text())
    assert record["status"] == "ok" and record["error"] is None
    assert (record["method"], record["dataset"], record["seed"]) == ("fixed", "digits", 0)
    assert record["config"]["search"]["epochs"] == 1
    assert record["versions"]["torch"] and record["device"] == "cpu"
    metrics = record["metrics"]
    for key in ("test_accuracy", "params_m", "macs_m", "search_seconds", "eval_seconds"):
        assert metrics[key] > 0, key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["search_peak_mem_mb"] >= 0
    assert metrics["search_custom"] == 7.0
    assert json.loads((folder / "architecture.json").read_text()) == GENOTYPE
    assert "evaluation:" in (folder / "log.txt").read_text()
    events = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    phases = [(e["phase"], e["epoch"]) for e in events]
    assert phases == [("search", 1), ("eval", 1), ("eval", 2), ("eval", 3)]


def test_failed_run_is_recorded_and_the_suite_goes_on(tmp_path, test_registry):
    configs = _configs(test_registry, ["broken", "fixed"])
    report = run_suite(configs, tmp_path, test_registry, isolate=False)
    assert [r["method"] for r in report.failed] == ["broken"]
    assert [r["method"] for r in report.completed] == ["fixed"]
    failed = read_record(run_dir(tmp_path, configs[0]))
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: search exploded"
    assert "search exploded" in (run_dir(tmp_path, configs[0]) / "log.txt").read_text()

    # Re-running skips the completed run and retries the failed one.
    todo, done = pending_runs(configs, tmp_path)
    assert [c.method for c in todo] == ["broken"] and [c.method for c in done] == ["fixed"]
    report = run_suite(configs, tmp_path, test_registry, isolate=False)
    assert len(report.skipped) == 1 and len(report.failed) == 1 and not report.completed


def test_ctrl_c_keeps_completed_runs(tmp_path, test_registry):
    done, interrupted = _configs(test_registry, ["fixed", "ctrl-c"])
    run_suite([done], tmp_path, test_registry, isolate=False)
    before = (run_dir(tmp_path, done) / RECORD).read_text()
    with pytest.raises(KeyboardInterrupt):
        run_suite([done, interrupted], tmp_path, test_registry, isolate=False)
    assert (run_dir(tmp_path, done) / RECORD).read_text() == before
    record = read_record(run_dir(tmp_path, interrupted))
    assert record["status"] == "failed" and record["error"] == "interrupted"


def test_a_worker_that_died_mid_run_is_recorded_as_failed(tmp_path, test_registry):
    (config,) = _configs(test_registry, ["fixed"])
    folder = run_dir(tmp_path, config)
    write_json_atomic(folder / RECORD, {"status": "running", "run_id": config.run_id()})
    record = settle_record(config, tmp_path, "worker process exited with code -9")
    assert record["status"] == "failed"
    assert read_record(folder)["error"] == "worker process exited with code -9"


def test_isolated_worker_runs_and_records(tmp_path, test_registry):
    # Worker processes load plugins from entry points, so use a real method here.
    (config,) = _configs(test_registry, ["darts"])
    report = run_suite([config], tmp_path, test_registry, isolate=True)
    assert [r["status"] for r in report.completed] == ["ok"]
    assert read_record(run_dir(tmp_path, config))["metrics"]["search_seconds"] > 0


def test_run_identity(test_registry):
    a, b = _configs(test_registry, ["fixed"], seeds=2)
    assert a.run_id() != b.run_id()
    (moved,) = _configs(test_registry, ["fixed"], data={"root": "/elsewhere"})
    assert moved.run_id() == a.run_id()  # where the data lives is not what a run computes
    (changed,) = _configs(test_registry, ["fixed"], options={"fixed": {"note": "x"}})
    assert changed.run_id() != a.run_id()


def test_records_get_the_mode_a_plain_open_would_give(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


# ------------------------------------------------------------------ one process per run

HOLD_LOCK = """
import sys, time
from pathlib import Path
from mgas_bench.locks import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def lock_holder():
    """Starts a real process that holds a run folder's lock until it is killed."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_run_locked_by_another_process_is_skipped_and_its_record_left_alone(
    tmp_path, test_registry, lock_holder
):
    busy, free = _configs(test_registry, ["fixed"], seeds=2)
    folder = run_dir(tmp_path, busy)
    write_json_atomic(folder / RECORD, {"status": "running", "run_id": busy.run_id()})
    holder = lock_holder(folder)
    assert is_locked(folder)
    with pytest.raises(RunLocked):
        execute_run(busy, tmp_path, test_registry)
    # A runner that thinks the run's worker died must not fail the other process's run.
    assert (
        settle_record(busy, tmp_path, "worker process exited with code -9")["status"] == "running"
    )

    report = run_suite([busy, free], tmp_path, test_registry, isolate=False)
    assert report.elsewhere == [busy] and [r["seed"] for r in report.completed] == [1]
    assert read_record(folder)["status"] == "running"

    # The OS drops the lock of a process killed outright: nothing stays locked.
    holder.kill()
    holder.wait()
    assert not is_locked(folder)
    report = run_suite([busy, free], tmp_path, test_registry, isolate=False)
    assert [r["seed"] for r in report.completed] == [0] and report.skipped == [free]


def test_a_run_completed_by_another_runner_is_not_run_again(tmp_path, test_registry):
    (config,) = _configs(test_registry, ["fixed"])
    first = execute_run(config, tmp_path, test_registry)
    # A runner that listed it as pending before the other finished it gets the record back.
    assert execute_run(config, tmp_path, test_registry) == first
    log = (run_dir(tmp_path, config) / "log.txt").read_text()
    assert log.count(f"run {config.run_id()}:") == 1


def test_two_runners_on_one_results_folder_run_each_run_once(tmp_path):
    args = [sys.executable, "-m", "mgas_bench", "run", "--budget", "smoke", "--methods", "darts"]
    args += ["--seeds", "3", "--threads", "1"]
    runners = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for runner in runners:
        _, err = runner.communicate(timeout=600)
        assert runner.returncode == 0, err.decode()
    folders = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(folders) == 3
    for folder in folders:
        assert read_record(folder)["status"] == "ok"
        # Each executing process appends to the run's log: one start line, one execution.
        log = (folder / "log.txt").read_text()
        assert log.count(f"run {folder.name}:") == 1, log


# ------------------------------------------------------------------ integrity


def test_a_full_disk_stops_the_suite_with_a_clear_error_and_keeps_earlier_records(
    tmp_path, test_registry, monkeypatch
):
    done, blocked = _configs(test_registry, ["fixed"], seeds=2)
    run_suite([done], tmp_path, test_registry, isolate=False)
    before = (run_dir(tmp_path, done) / RECORD).read_text()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", disk_full)
    with pytest.raises(ResultsWriteError, match="No space left on device; records written before"):
        run_suite([done, blocked], tmp_path, test_registry, isolate=False)
    monkeypatch.undo()
    assert (run_dir(tmp_path, done) / RECORD).read_text() == before
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written files left behind
    stored = load_runs(tmp_path)
    assert list(stored.runs["seed"]) == [0] and not stored.unreadable


def test_a_non_finite_search_loss_fails_the_run_with_the_reason(tmp_path, test_registry):
    # A learning rate near float32's limit makes the weights, then the loss, inf or nan.
    (config,) = _configs(test_registry, ["darts"], options={"darts": {"w_lr": 3e38}})
    record = execute_run(config, tmp_path, test_registry)
    assert record["status"] == "failed"
    assert record["error"].startswith("FloatingPointError: search loss became")
    assert "search loss became" in (run_dir(tmp_path, config) / "log.txt").read_text()


def test_an_unreadable_record_is_run_again_instead_of_stopping_the_suite(tmp_path, test_registry):
    (config,) = _configs(test_registry, ["fixed"])
    folder = run_dir(tmp_path, config)
    folder.mkdir(parents=True)
    (folder / RECORD).write_text('{"status": "ok", "metr')  # cut off, e.g. by a copy
    todo, done = pending_runs([config], tmp_path)
    assert todo == [config] and not done
    report = run_suite([config], tmp_path, test_registry, isolate=False)
    assert [r["status"] for r in report.completed] == ["ok"]
    assert read_record(folder)["status"] == "ok"


# ------------------------------------------------------------------ parallel runs


def _log_span(folder) -> tuple[str, str]:
    lines = (folder / "log.txt").read_text().splitlines()
    return lines[0][:23], lines[-1][:23]  # the timestamps of the first and last line


def test_jobs_run_worker_processes_side_by_side_with_the_same_records(tmp_path, test_registry):
    configs = _configs(
        test_registry,
        ["darts"],
        seeds=3,
        search={"max_steps_per_epoch": 2},
        eval={"epochs": 1, "max_steps_per_epoch": 2},
    )
    parallel = run_suite(configs, tmp_path / "jobs2", test_registry, threads=1, jobs=2)
    sequential = run_suite(configs, tmp_path / "jobs1", test_registry, threads=1)
    assert len(parallel.completed) == len(sequential.completed) == 3
    for config in configs:
        got, want = run_dir(tmp_path / "jobs2", config), run_dir(tmp_path / "jobs1", config)
        assert (got / "architecture.json").read_text() == (want / "architecture.json").read_text()
        accuracy = [read_record(f)["metrics"]["test_accuracy"] for f in (got, want)]
        assert accuracy[0] == accuracy[1]
    spans = sorted(_log_span(run_dir(tmp_path / "jobs2", config)) for config in configs)
    assert spans[1][0] < spans[0][1]  # the second run started before the first one ended
