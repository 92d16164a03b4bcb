"""The local executor: runs a suite's pending runs one after another.

Each run executes in a fresh worker process by default. A run that crashes the
interpreter, leaks memory or is killed then takes only itself down, and its
search peak memory is measured in a process that holds nothing else. Completed
runs are skipped and unfinished ones go on from their last checkpoint, so re-running
a suite after a failure, a kill or Ctrl-C resumes it.
Runners that share a results folder skip the runs another one is executing (each
run is locked by the process that executes it; see :mod:`mgas_bench.locks`).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mgas_bench.config import RunConfig
from mgas_bench.execution import execute_run
from mgas_bench.locks import RunLocked, is_locked, run_lock
from mgas_bench.records import (
    RECORD,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_RUNNING,
    is_completed,
    new_record,
    read_record,
    run_dir,
    write_json_atomic,
)
from mgas_bench.registry import Registry


@dataclass
class SuiteReport:
    completed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[RunConfig] = field(default_factory=list)
    elsewhere: list[RunConfig] = field(default_factory=list)  # run by another process

    def add(self, config: RunConfig, record: dict[str, Any] | None) -> None:
        """Files one finished run (``record`` None: another process runs it) and prints it."""
        label = run_label(config)
        if record is None:
            self.elsewhere.append(config)
            tqdm.write(f"busy   {label}: another process is running it")
        elif record["status"] == STATUS_OK:
            self.completed.append(record)
            acc = record["metrics"].get("test_accuracy", float("nan"))
            tqdm.write(f"ok     {label}: test accuracy {acc:.4f} [{record['run_id']}]")
        else:
            self.failed.append(record)
            tqdm.write(f"FAILED {label}: {record['error']} [{record['run_id']}]")


def run_label(config: RunConfig) -> str:
    return f"{config.method} / {config.dataset} / {config.variant} / seed {config.seed}"


def progress_bar(total: int, done: int) -> tqdm:
    """The suite's progress display, the same for every executor."""
    return tqdm(total=total, initial=done, desc="runs", unit="run")


def pending_runs(
    configs: Sequence[RunConfig], results: Path
) -> tuple[list[RunConfig], list[RunConfig]]:
    """Split ``configs`` into (to run, already completed)."""
    todo, done = [], []
    for config in configs:
        (done if is_completed(run_dir(results, config)) else todo).append(config)
    return todo, done


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads.

    Worth doing when other processes share the cores: OpenMP threads that spin
    waiting for a busy core can make small convolutions many times slower.
    """
    if threads:
        torch.set_num_threads(threads)


# A worker's exit status when another process holds its run's lock (BSD's EX_TEMPFAIL).
EXIT_RUN_LOCKED = 75


def _worker(
    config_json: str, results: str, threads: int | None, resume: bool, shares_console: bool
) -> None:
    set_threads(threads)
    try:
        execute_run(
            RunConfig.model_validate_json(config_json),
            Path(results),
            resume=resume,
            shares_console=shares_console,
        )
    except RunLocked:
        sys.exit(EXIT_RUN_LOCKED)


def _run_in_worker(
    config: RunConfig,
    results: Path,
    threads: int | None,
    resume: bool,
    started: Callable[[BaseProcess], None] | None = None,
) -> dict[str, Any] | None:
    """The run's final record, or None if another process is executing it.

    ``started`` (given for runs that execute side by side) hears of the worker process.
    """
    ctx = multiprocessing.get_context("spawn")
    args = (config.model_dump_json(), str(results), threads, resume, started is not None)
    process = ctx.Process(target=_worker, args=args)
    process.start()
    if started is not None:
        started(process)
    try:
        process.join()
    except KeyboardInterrupt:
        # The worker got the same SIGINT and records itself as interrupted; give it
        # a moment to do so before making sure it is gone.
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()
        settle_record(config, results, "interrupted")
        raise
    if process.exitcode == EXIT_RUN_LOCKED:
        return None
    return settle_record(config, results, f"worker process exited with code {process.exitcode}")


def settle_record(config: RunConfig, results: Path, reason: str) -> dict[str, Any]:
    """The run's final record; a worker that died mid-run is recorded as failed.

    A record another process is still writing (it holds the run's lock) is left alone.
    """
    folder = run_dir(results, config)
    try:
        with run_lock(folder):
            record = read_record(folder) or new_record(config, STATUS_RUNNING, config.device)
            if record.get("status") == STATUS_RUNNING:
                record.update(status=STATUS_FAILED, error=reason)
                write_json_atomic(folder / RECORD, record)
            return record
    except RunLocked:
        return read_record(folder) or new_record(config, STATUS_RUNNING, config.device)


def run_suite(
    configs: Sequence[RunConfig],
    results: Path,
    registry: Registry,
    isolate: bool = True,
    threads: int | None = None,
    resume: bool = True,
    jobs: int = 1,
) -> SuiteReport:
    """Runs the pending runs, ``jobs`` worker processes at a time (``isolate`` only).

    Unfinished runs go on from their checkpoints if ``resume``.
    """
    report = SuiteReport()
    if not isolate:
        set_threads(threads)
    todo, report.skipped = pending_runs(configs, results)
    with progress_bar(len(configs), len(report.skipped)) as bar:
        if isolate and jobs > 1:
            _run_in_parallel(todo, results, threads, resume, jobs, report, bar)
            return report
        for config in todo:
            bar.set_postfix_str(run_label(config))
            outcome = _handled_elsewhere(config, results)
            if outcome is _FREE and isolate:
                outcome = _run_in_worker(config, results, threads, resume)
            elif outcome is _FREE:
                try:
                    outcome = execute_run(config, results, registry, resume=resume)
                except RunLocked:
                    outcome = _BUSY
                except KeyboardInterrupt:
                    settle_record(config, results, "interrupted")
                    raise
            _file(report, bar, config, outcome)
    return report


# What became of a pending run before this runner got to it.
_FREE = "free"  # nothing: run it
_SKIPPED = "skipped"  # another runner completed it since pending_runs
_BUSY = "busy"  # another process is executing it (it holds the run's lock)


def _handled_elsewhere(config: RunConfig, results: Path) -> str:
    folder = run_dir(results, config)
    if is_completed(folder):
        return _SKIPPED
    if is_locked(folder):
        return _BUSY  # saves starting a worker that would find it locked
    return _FREE


def _file(
    report: SuiteReport, bar: tqdm, config: RunConfig, outcome: dict[str, Any] | str | None
) -> None:
    """Files a run's outcome (a record; None or _BUSY: run elsewhere; _SKIPPED) and ticks."""
    if outcome == _SKIPPED:
        report.skipped.append(config)
    else:
        report.add(config, None if outcome == _BUSY else outcome)
    bar.update(1)


def _run_in_parallel(
    todo: Sequence[RunConfig],
    results: Path,
    threads: int | None,
    resume: bool,
    jobs: int,
    report: SuiteReport,
    bar: tqdm,
) -> None:
    """Up to ``jobs`` runs at once, each in its own worker process, reported as they finish.

    Threads only wait here; the work happens in the worker processes. On Ctrl-C the
    workers (which got the same SIGINT) record themselves as interrupted; any still
    alive after a grace period is terminated and settled.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    live: dict[str, tuple[BaseProcess, RunConfig]] = {}  # by run id
    lock = threading.Lock()

    def execute(config: RunConfig) -> dict[str, Any] | str | None:
        outcome = _handled_elsewhere(config, results)
        if outcome is not _FREE:
            return outcome

        def started(process: BaseProcess) -> None:
            with lock:
                live[config.run_id()] = (process, config)

        record = _run_in_worker(config, results, threads, resume, started)
        with lock:
            live.pop(config.run_id(), None)
        return record

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="run")
    futures = {pool.submit(execute, config): config for config in todo}
    try:
        for future in as_completed(futures):
            config = futures[future]
            bar.set_postfix_str(run_label(config))
            _file(report, bar, config, future.result())
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 10
        with lock:
            running = list(live.values())
        for process, config in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
            settle_record(config, results, "interrupted")
        raise
    pool.shutdown(wait=True)
