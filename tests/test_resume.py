"""Checkpoint and resume: a run killed part way goes on to the result of one never stopped."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgas_bench.checkpoints import RunCheckpoints, checkpoint_dir
from mgas_bench.config import expand_suite, parse_suite
from mgas_bench.execution import execute_run
from mgas_bench.records import read_record, run_dir

# Two methods, two kills each: DARTS in its search and in evaluation; MG-DARTS in the
# middle of stage 2 (a stage head and live optimisers) and right after stage 3, whose
# shrink narrowed the supernet's convolutions.
SUITE = """
methods = ["darts", "mg-darts"]
seeds = 1
budget = "smoke"
[search]
epochs = 6
max_steps_per_epoch = 2
[eval]
epochs = 3
max_steps_per_epoch = 3
"""
KILLS = [
    ("darts", r"checkpoint: search epoch 2$"),
    ("darts", r"checkpoint: eval epoch 1$"),
    ("mg-darts", r"checkpoint: search epoch 3$"),
    ("mg-darts", r"checkpoint: search epoch \d+, stage 3$"),
]
# What depends on the machine's load, not on the computation.
TIMING = {"search_seconds", "search_peak_mem_mb", "eval_seconds", "time"}


def _command(suite: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "mgas_bench", "run", str(suite), "--results", str(results)]


def _run_to_the_end(suite: Path, results: Path) -> None:
    done = subprocess.run(
        [*_command(suite, results), "--threads", "1"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _kill_when_logged(suite: Path, results: Path, method: str, pattern: str) -> None:
    """Start the suite; SIGKILL its process group once ``method``'s run log matches ``pattern``."""
    runner = subprocess.Popen(
        [*_command(suite, results), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill takes the runner and its worker process
    )
    deadline = time.monotonic() + 300
    try:
        while runner.poll() is None and time.monotonic() < deadline:
            for folder in (results / "runs").glob("*"):
                record, log = folder / "record.json", folder / "log.txt"
                if not (record.exists() and log.exists()):
                    continue
                try:
                    if json.loads(record.read_text())["method"] != method:
                        continue
                except ValueError:
                    continue
                if re.search(pattern, log.read_text(), re.MULTILINE):
                    os.killpg(runner.pid, signal.SIGKILL)
                    runner.wait()
                    return
            time.sleep(0.05)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    pytest.fail(f"the suite ended (or hung) before {method}'s log matched {pattern!r}")


def _outcome(results: Path) -> dict[str, dict]:
    """Per method: the architecture files, the record's metrics and the epoch log, untimed."""
    out = {}
    for folder in sorted((results / "runs").iterdir()):
        record = read_record(folder)
        events = {}
        for line in (folder / "metrics.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "resumed":
                continue
            # The redone epochs come after a "resumed" line; the last copy wins.
            key = (event["event"], event.get("phase"), event.get("epoch"), event.get("stage"))
            events[key] = {k: v for k, v in event.items() if k not in TIMING}
        tensors = folder / "architecture.pt"
        out[record["method"]] = {
            "status": record["status"],
            "architecture": (folder / "architecture.json").read_text(),
            "tensors": torch.load(tensors) if tensors.exists() else None,
            "metrics": {k: v for k, v in record["metrics"].items() if k not in TIMING},
            "events": events,
            "checkpoints_left": checkpoint_dir(folder).exists(),
        }
    return out


def _assert_same(resumed: dict, uninterrupted: dict) -> None:
    assert resumed.keys() == uninterrupted.keys()
    for method, got in resumed.items():
        want = uninterrupted[method]
        assert got["status"] == want["status"] == "ok"
        assert got["architecture"] == want["architecture"], method
        if want["tensors"] is not None:
            for got_cell, want_cell in zip(got["tensors"], want["tensors"], strict=True):
                for got_op, want_op in zip(got_cell, want_cell, strict=True):
                    for g, w in zip(got_op, want_op, strict=True):
                        assert torch.equal(g, w), method
        assert got["metrics"] == want["metrics"], method
        assert got["events"] == want["events"], method
        assert not got["checkpoints_left"]


def test_runs_killed_with_sigkill_resume_to_the_same_architecture_and_metrics(tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    _run_to_the_end(suite, tmp_path / "uninterrupted")

    resumed = tmp_path / "resumed"
    for method, pattern in KILLS:
        _kill_when_logged(suite, resumed, method, pattern)
    _run_to_the_end(suite, resumed)

    _assert_same(_outcome(resumed), _outcome(tmp_path / "uninterrupted"))
    logs = {
        read_record(f)["method"]: (f / "log.txt").read_text() for f in (resumed / "runs").iterdir()
    }
    assert "resuming search after epoch 2" in logs["darts"]
    assert "search finished in an earlier attempt" in logs["darts"]
    assert "resuming eval after epoch 1" in logs["darts"]
    assert "resuming search after epoch 3" in logs["mg-darts"]
    for folder in (resumed / "runs").iterdir():
        events = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert any(e["event"] == "resumed" for e in events)  # the run_resumed hook was called


def test_an_nni_search_killed_with_sigkill_resumes_to_the_same_architecture(tmp_path):
    pytest.importorskip("nni")
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.replace('["darts", "mg-darts"]', '["nni-darts"]'))
    _run_to_the_end(suite, tmp_path / "uninterrupted")
    resumed = tmp_path / "resumed"
    _kill_when_logged(suite, resumed, "nni-darts", r"checkpoint: search epoch 3$")
    _run_to_the_end(suite, resumed)
    _assert_same(_outcome(resumed), _outcome(tmp_path / "uninterrupted"))


# ------------------------------------------------------------------ the host's side


@pytest.fixture
def log(caplog) -> logging.Logger:
    caplog.set_level(logging.INFO)
    return logging.getLogger("test_resume")


def test_restore_puts_the_random_generators_back(tmp_path, log):
    loader_rng = torch.Generator().manual_seed(1)
    checkpoints = RunCheckpoints(tmp_path, "search", log, generators=[loader_rng])
    torch.manual_seed(0)
    checkpoints.save({"step": 7}, epoch=3)
    expected = (torch.rand(3), torch.rand(3, generator=loader_rng))
    torch.rand(5), torch.rand(5, generator=loader_rng)  # the killed process went on drawing

    again = RunCheckpoints(tmp_path, "search", log, generators=[loader_rng])
    assert again.restore() == {"step": 7}
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, generator=loader_rng), expected[1])


def test_an_unreadable_checkpoint_starts_the_phase_afresh(tmp_path, log, caplog):
    checkpoints = RunCheckpoints(tmp_path, "search", log)
    checkpoints.path.parent.mkdir(parents=True)
    checkpoints.path.write_bytes(b"not a checkpoint")
    assert checkpoints.restore() is None
    assert "cannot resume from" in caplog.text and "starts afresh" in caplog.text


def test_a_state_that_cannot_be_pickled_is_not_checkpointed(tmp_path, log, caplog):
    checkpoints = RunCheckpoints(tmp_path, "search", log)
    checkpoints.save({"hook": lambda: None}, epoch=1)
    assert not checkpoints.path.exists()
    assert "cannot checkpoint the search" in caplog.text
    assert RunCheckpoints(tmp_path, "search", log).restore() is None


def test_no_resume_starts_an_unfinished_run_afresh(tmp_path, registry, monkeypatch):
    suite = parse_suite(
        {
            "methods": ["darts"],
            "seeds": 1,
            "budget": "smoke",
            "search": {"epochs": 3, "max_steps_per_epoch": 2},
            "eval": {"epochs": 1, "max_steps_per_epoch": 2},
        }
    )
    (config,) = expand_suite(suite, registry)
    folder = run_dir(tmp_path, config)
    save = RunCheckpoints.save

    def crash_after_the_first_epoch(self, state, *, epoch, stage=None):
        save(self, state, epoch=epoch, stage=stage)
        raise RuntimeError("crashed after a checkpoint")

    monkeypatch.setattr(RunCheckpoints, "save", crash_after_the_first_epoch)
    assert execute_run(config, tmp_path, registry)["status"] == "failed"
    assert (checkpoint_dir(folder) / "search.pt").exists()
    monkeypatch.undo()

    assert execute_run(config, tmp_path, registry, resume=False)["status"] == "ok"
    assert "resuming" not in (folder / "log.txt").read_text()
    assert not checkpoint_dir(folder).exists()  # a completed run keeps no checkpoints
