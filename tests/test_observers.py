"""The built-in observers: the progress bar's count, and the metrics log."""

from __future__ import annotations

import json

import pytest

from mgas_bench.config import RunConfig
from mgas_bench.records import RunInfo
from plugins import observers

SEARCH_EPOCHS, EVAL_EPOCHS = 4, 15


def _run(tmp_path) -> RunInfo:
    config = RunConfig(
        method="mg-darts",
        dataset="digits",
        seed=0,
        budget="small",
        search={"epochs": SEARCH_EPOCHS, "batch_size": 8, "cells": 3, "channels": 4},
        eval={"epochs": EVAL_EPOCHS, "batch_size": 8, "layers": 3, "channels": 4},
    )
    return RunInfo("run", tmp_path, config)


def test_the_bar_counts_epochs_of_data_when_a_method_reports_rounds(tmp_path):
    # MG-DARTS's default suite: 10 rounds of 6 batches over a 16-batch epoch.
    run = _run(tmp_path)
    observers.run_started(run)
    bar = observers._bars[run.run_id]
    try:
        for k in range(1, 11):
            observers.epoch_ended(run, "search", k, {"data_epochs": k * 6 / 16})
        assert bar.n == pytest.approx(3.75)
        for k in range(1, EVAL_EPOCHS + 1):
            observers.epoch_ended(run, "eval", k, {"loss": 0.1})
        assert bar.n == pytest.approx(3.75 + EVAL_EPOCHS) and bar.n <= bar.total
    finally:
        observers.run_finished(run, {})
    assert run.run_id not in observers._bars


def test_the_bar_counts_reported_epochs_otherwise(tmp_path):
    run = _run(tmp_path)
    observers.run_started(run)
    bar = observers._bars[run.run_id]
    try:
        for k in range(1, SEARCH_EPOCHS + 1):
            observers.epoch_ended(run, "search", k, {"loss": 1.0})
        assert bar.n == SEARCH_EPOCHS
        observers.epoch_ended(run, "eval", 1, {})
        assert bar.n == SEARCH_EPOCHS + 1
    finally:
        observers.run_finished(run, {})
    lines = [
        json.loads(line) for line in (tmp_path / observers.METRICS_LOG).read_text().splitlines()
    ]
    assert [(e["phase"], e["epoch"]) for e in lines] == [
        *(("search", k) for k in range(1, SEARCH_EPOCHS + 1)),
        ("eval", 1),
    ]
