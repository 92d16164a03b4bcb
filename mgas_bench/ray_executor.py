"""The Ray executor: every pending run of a suite as one Ray task.

``mgas-bench run SUITE --executor ray [--address ADDRESS]`` submits the runs to a
running Ray cluster, or to a local Ray instance started for the call. Each task asks
for the resources its run needs (``threads`` CPUs, or 1 when unset, and a GPU when
the run's device is CUDA), executes the run with :func:`execute_run` (so the run's
lock, its record and its failure handling are the local executor's), and returns the
run's files. Records arrive in the results store as runs finish. A worker node that
does not share the results folder's filesystem writes into its own copy; the driver
then writes what the task returned, so the driver's results folder is complete
either way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mgas_bench.config import RunConfig
from mgas_bench.execution import execute_run
from mgas_bench.locks import LOCK, RunLocked, run_lock
from mgas_bench.records import RECORD, is_completed, read_record, run_dir, write_bytes_atomic
from mgas_bench.runner import (
    SuiteReport,
    pending_runs,
    progress_bar,
    run_label,
    set_threads,
    settle_record,
)

INSTALL_COMMAND = "pip install 'mgas-bench[ray]'"


class ExecutorUnavailable(RuntimeError):
    """The executor's library is not installed."""


def ray_unavailable_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return f"Ray is not installed; install it with: {INSTALL_COMMAND}"
    return None


def _execute_task(
    config_json: str, results: str, threads: int | None, resume: bool = True
) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """Runs in a Ray worker: the run's record (None if locked elsewhere) and its files."""
    set_threads(threads)
    config = RunConfig.model_validate_json(config_json)
    try:
        record = execute_run(config, Path(results), resume=resume)
    except RunLocked:
        return None, {}
    folder = run_dir(Path(results), config)
    files = {
        path.name: path.read_bytes()
        for path in folder.iterdir()
        if path.is_file() and path.name != LOCK and not path.name.startswith(".")
    }
    return record, files


def _store(results: Path, config: RunConfig, record: dict[str, Any], files: dict[str, bytes]):
    """Writes a task's files into the driver's results folder, unless they are there already."""
    folder = run_dir(results, config)
    if read_record(folder) == record:
        return  # the worker shares this filesystem: it wrote them itself
    with run_lock(folder):
        # The record last: a readable record means the run's files are complete.
        for name in sorted(files, key=lambda name: name == RECORD):
            write_bytes_atomic(folder / name, files[name])


def run_suite_on_ray(
    configs: Sequence[RunConfig],
    results: Path,
    address: str | None = None,
    threads: int | None = None,
    num_cpus: int | None = None,
    resume: bool = True,
) -> SuiteReport:
    """Runs the suite's pending runs as Ray tasks; ``num_cpus`` sizes a local Ray only."""
    reason = ray_unavailable_reason()
    if reason:
        raise ExecutorUnavailable(reason)
    import ray

    results = results.resolve()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    task = ray.remote(_execute_task)
    report = SuiteReport()
    todo, report.skipped = pending_runs(configs, results)
    pending: dict[Any, RunConfig] = {}
    try:
        with progress_bar(len(configs), len(report.skipped)) as bar:
            for config in todo:
                if is_completed(run_dir(results, config)):  # by another runner meanwhile
                    report.skipped.append(config)
                    bar.update(1)
                    continue
                resources = {"num_cpus": threads or 1}
                if config.device.startswith("cuda"):
                    resources["num_gpus"] = 1
                ref = task.options(**resources, max_retries=0).remote(
                    config.model_dump_json(), str(results), threads, resume
                )
                pending[ref] = config
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                config = pending.pop(ref)
                bar.set_postfix_str(run_label(config))
                try:
                    record, files = ray.get(ref)
                except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as exc:
                    # The task died before writing a final record (a crash, a killed worker).
                    record = settle_record(config, results, f"Ray task failed: {exc}")
                else:
                    if record is not None:
                        _store(results, config, record, files)
                report.add(config, record)
                bar.update(1)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return report
