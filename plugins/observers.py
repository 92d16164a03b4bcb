"""Built-in run observers: a per-epoch progress bar and a JSON-lines metrics log."""

from __future__ import annotations

import json
import time
from typing import Any

from tqdm import tqdm

from mgas_bench.hookspecs import hookimpl
from mgas_bench.records import RunInfo

METRICS_LOG = "metrics.jsonl"
_bars: dict[str, tqdm] = {}


def _append(run: RunInfo, event: dict[str, Any]) -> None:
    with open(run.run_dir / METRICS_LOG, "a") as fh:
        fh.write(json.dumps({"time": time.time(), **event}) + "\n")


@hookimpl
def run_started(run: RunInfo) -> None:
    if run.shares_console:
        return  # several runs' bars on one line would garble it; the suite's bar remains
    config = run.config
    _bars[run.run_id] = tqdm(
        total=config.search.epochs + config.eval.epochs,
        desc=f"{config.method} epochs",
        unit="epoch",
        position=1,
        leave=False,
    )


@hookimpl
def epoch_ended(run: RunInfo, phase: str, epoch: int, metrics: dict[str, float]) -> None:
    _append(run, {"event": "epoch", "phase": phase, "epoch": epoch, **metrics})
    bar = _bars.get(run.run_id)
    if bar is not None:
        bar.set_postfix_str(f"{phase} {epoch}")
        # A method that reports rounds, not epochs, says how much data they have read; the
        # bar's search share is the budget's epochs, so it counts that instead.
        read = metrics.get("data_epochs") if phase == "search" else None
        bar.update(1 if read is None else read - bar.n)


@hookimpl
def stage_ended(run: RunInfo, stage: int, metrics: dict[str, float]) -> None:
    _append(run, {"event": "stage", "stage": stage, **metrics})


@hookimpl
def run_resumed(run: RunInfo, phase: str, epoch: int) -> None:
    # Readers keep the last line per (phase, epoch): the redone epochs come after this.
    _append(run, {"event": "resumed", "phase": phase, "epoch": epoch})
    bar = _bars.get(run.run_id)
    if bar is not None:
        bar.update(epoch + (run.config.search.epochs if phase == "eval" else 0) - bar.n)


@hookimpl
def run_finished(run: RunInfo, record: dict[str, Any]) -> None:
    bar = _bars.pop(run.run_id, None)
    if bar is not None:
        bar.close()
