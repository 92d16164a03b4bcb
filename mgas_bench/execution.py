"""Executes one run, start to finish, in the current process.

Search, save the architecture, evaluate it, write the record. Anything that goes
wrong is written into the run's record (status ``failed``) and its log; the
caller decides whether to go on with the next run. Both phases checkpoint as they go
(:mod:`mgas_bench.checkpoints`), so executing an unfinished run again goes on from
where the last attempt stopped.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgas_bench.checkpoints import RunCheckpoints, checkpoint_dir, discard_checkpoints
from mgas_bench.components import Architecture, DataBundle, DataRequest, SearchContext
from mgas_bench.config import RunConfig
from mgas_bench.data import search_data
from mgas_bench.devices import autocast, loader_options, memory_format, resolve_device
from mgas_bench.evaluation import evaluate_architecture
from mgas_bench.locks import run_lock
from mgas_bench.memory import PeakMemory
from mgas_bench.records import (
    ARCHITECTURE,
    ARCHITECTURE_TENSORS,
    LOG,
    RECORD,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_RUNNING,
    RunInfo,
    is_completed,
    new_record,
    read_record,
    run_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from mgas_bench.registry import Registry, build_registry

SEARCH_DONE = "search-done.json"  # in the checkpoints folder, beside the phases' checkpoints


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _run_logger(run_id: str, path: Path) -> logging.Logger:
    log = logging.getLogger(f"mgas_bench.run.{run_id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def save_architecture(arch: Architecture, folder: Path) -> None:
    write_json_atomic(folder / ARCHITECTURE, arch.payload)
    if arch.tensors is not None:
        buffer = io.BytesIO()
        torch.save(arch.tensors, buffer)
        write_bytes_atomic(folder / ARCHITECTURE_TENSORS, buffer.getvalue())


def load_architecture(folder: Path, fmt: str) -> Architecture:
    """The architecture :func:`save_architecture` wrote to ``folder``, in format ``fmt``."""
    payload = json.loads((folder / ARCHITECTURE).read_text())
    tensors_file = folder / ARCHITECTURE_TENSORS
    tensors = torch.load(tensors_file, weights_only=True) if tensors_file.exists() else None
    return Architecture(fmt, payload, tensors)


def execute_run(
    config: RunConfig,
    results: Path,
    registry: Registry | None = None,
    resume: bool = True,
    shares_console: bool = False,
) -> dict[str, Any]:
    """Run one config and return its final record (also written to disk).

    Holds the run's lock throughout: :class:`~mgas_bench.locks.RunLocked` if another
    process is executing the same run. A run that another runner completed since this
    one listed it as pending is not run again; its record is returned. An unfinished
    run goes on from its last checkpoint unless ``resume`` is false.
    """
    folder = run_dir(results, config)
    with run_lock(folder):
        if is_completed(folder):
            return read_record(folder)
        if not resume:
            discard_checkpoints(folder)
        return _execute(config, results, registry or build_registry(), shares_console)


def _execute(
    config: RunConfig, results: Path, registry: Registry, shares_console: bool
) -> dict[str, Any]:
    folder = run_dir(results, config)
    info = RunInfo(config.run_id(), folder, config, shares_console)
    log = _run_logger(info.run_id, folder / LOG)
    record = new_record(config, STATUS_RUNNING, config.device)
    write_json_atomic(folder / RECORD, record)
    hook = registry.hook
    try:
        device = resolve_device(config.device)
        record["device"] = str(device)
        hook.run_started(run=info)
        log.info(
            "run %s: %s on %s, seed %d", info.run_id, config.method, config.dataset, config.seed
        )
        record["metrics"], record["architecture_format"] = _search_and_evaluate(
            config, registry, info, device, log
        )
        record["status"] = STATUS_OK
        discard_checkpoints(folder)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        record["status"] = STATUS_FAILED
        record["error"] = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
        log.error("run failed:\n%s", traceback.format_exc())
        write_json_atomic(folder / RECORD, record)
        if interrupted or not isinstance(exc, Exception):
            raise
    else:
        write_json_atomic(folder / RECORD, record)
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)
        # Also on Ctrl-C, so observers can close what they opened.
        hook.run_finished(run=info, record=record)
    return record


def _search_and_evaluate(
    config: RunConfig,
    registry: Registry,
    info: RunInfo,
    device: torch.device,
    log: logging.Logger,
) -> tuple[dict[str, float], str]:
    dataset = registry.get("dataset", config.dataset)
    request = DataRequest(
        root=Path(config.data.root).expanduser(),
        download=config.data.download,
        verify_checksums=config.data.verify_checksums,
        options=config.data.options,
    )
    bundle = dataset.load(request)
    searched = _finished_search(info.run_dir, log)
    if searched is None:
        searched = _search(config, registry, info, bundle, device, log)
    arch, search_metrics = searched
    fmt = registry.get("architecture_format", arch.format)

    checkpoints = RunCheckpoints(
        info.run_dir,
        "eval",
        log,
        resumed=lambda epoch: registry.hook.run_resumed(run=info, phase="eval", epoch=epoch),
    )
    seed_everything(config.seed)
    metrics = evaluate_architecture(
        arch,
        fmt,
        bundle,
        config.eval,
        config.seed,
        device,
        on_epoch=functools.partial(_report_epoch, registry, info, log, "eval"),
        checkpoints=checkpoints,
        runtime=config.runtime,
    )
    metrics.update(search_metrics)
    log.info("evaluation: %s", _fmt(metrics))
    return metrics, arch.format


def _search(
    config: RunConfig,
    registry: Registry,
    info: RunInfo,
    bundle: DataBundle,
    device: torch.device,
    log: logging.Logger,
) -> tuple[Architecture, dict[str, float]]:
    """Search (from the last checkpoint, if any), save the architecture, mark the search done."""
    method = registry.get("method", config.method)
    reason = method.unavailable_reason()
    if reason:
        raise RuntimeError(f"method {config.method!r} is unavailable: {reason}")
    seed_everything(config.seed)
    budget = config.search.budget()
    data = search_data(
        bundle,
        config.data.search_fraction,
        config.data.split_seed,
        budget.batch_size,
        config.seed,
        loader_options(config.runtime, device),
    )

    def stage_ended(stage: int, metrics: dict[str, float]) -> None:
        log.info("stage %d ended: %s", stage, _fmt(metrics))
        registry.hook.stage_ended(run=info, stage=stage, metrics=metrics)

    meter = PeakMemory(device)
    checkpoints = RunCheckpoints(
        info.run_dir,
        "search",
        log,
        generators=[data.weights.generator, data.arch.generator],
        peak_mb=meter.so_far,
        resumed=lambda epoch: registry.hook.run_resumed(run=info, phase="search", epoch=epoch),
    )
    ctx = SearchContext(
        method=config.method,
        options=config.options,
        budget=budget,
        data=data,
        device=device,
        seed=config.seed,
        run_dir=info.run_dir,
        log=log,
        components=registry,
        epoch_ended=lambda epoch, metrics, phase="search": _report_epoch(
            registry, info, log, phase, epoch, metrics
        ),
        stage_ended=stage_ended,
        checkpoints=checkpoints,
        memory_format=memory_format(config.runtime),
    )
    prepare = getattr(method, "prepare", None)  # optional: plugins may duck-type Method
    if prepare is not None:
        prepare(ctx)
    checkpoints.start_clock()
    with meter, autocast(config.runtime, device):
        result = method.search(ctx)
    arch = result.architecture
    fmt = registry.get("architecture_format", arch.format)
    fmt.validate(arch.payload)
    save_architecture(arch, info.run_dir)
    metrics = {
        "search_seconds": checkpoints.seconds(),
        "search_peak_mem_mb": max(meter.mb, checkpoints.peak_mb_before),
        **{f"search_{k}": v for k, v in result.metrics.items()},
    }
    # The architecture is on disk: a run killed during evaluation does not search again.
    write_json_atomic(
        checkpoint_dir(info.run_dir) / SEARCH_DONE, {"format": arch.format, "metrics": metrics}
    )
    checkpoints.discard()
    log.info("search done in %.1f s; architecture: %s", metrics["search_seconds"], arch.payload)
    return arch, metrics


def _finished_search(
    folder: Path, log: logging.Logger
) -> tuple[Architecture, dict[str, float]] | None:
    """The architecture and search metrics of an earlier attempt whose search finished."""
    marker = checkpoint_dir(folder) / SEARCH_DONE
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text())
        arch = load_architecture(folder, done["format"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot reuse the finished search (%s); searching again", exc)
        return None
    log.info("search finished in an earlier attempt; evaluating its architecture")
    return arch, done["metrics"]


def _report_epoch(
    registry: Registry,
    info: RunInfo,
    log: logging.Logger,
    phase: str,
    epoch: int,
    metrics: dict[str, float],
) -> None:
    """An epoch of ``phase`` ended: into the run's log, and to the observers."""
    log.info("%s epoch %d: %s", phase, epoch, _fmt(metrics))
    registry.hook.epoch_ended(run=info, phase=phase, epoch=epoch, metrics=metrics)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )
