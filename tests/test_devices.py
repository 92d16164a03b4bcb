"""Runtime options: precision, memory format, loader workers, pinned memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mgas_bench.components import SearchContext
from mgas_bench.config import (
    ConfigError,
    RunConfig,
    RuntimeConfig,
    expand_suite,
    load_suite,
    parse_suite,
)
from mgas_bench.data import LoaderOptions, loader
from mgas_bench.devices import autocast, loader_options, resolve_device
from mgas_bench.execution import execute_run


def _config(**runtime) -> RunConfig:
    return RunConfig(
        method="darts",
        dataset="digits",
        seed=0,
        budget="smoke",
        search={"epochs": 1, "batch_size": 8, "cells": 3, "channels": 4},
        eval={"epochs": 1, "batch_size": 8, "layers": 3, "channels": 4},
        runtime=runtime,
    )


def test_default_runtime_keeps_the_run_ids_from_before_the_option(registry):
    # Ids of the default suite's seed-0 runs, as made before runtime options existed:
    # the folders of results that users already have must still be found.
    ids = {(c.method, c.seed): c.run_id() for c in expand_suite(load_suite(None), registry)}
    assert ids[("darts", 0)] == "82d911b964c5cb8f"
    assert ids[("mg-darts", 0)] == "ce299d9f3522e92f"


def test_options_that_change_the_arithmetic_change_the_run_id():
    plain = _config().run_id()
    changed = {
        _config(precision="bf16").run_id(),
        _config(channels_last=True).run_id(),
        _config(loader_workers=2).run_id(),
    }
    assert plain not in changed and len(changed) == 3
    assert _config(pin_memory=True).run_id() == plain  # speed only


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match=r"runtime\.precision: Input should be 'fp32' or 'bf16'"):
        parse_suite({"runtime": {"precision": "fp8"}})


def test_pinned_memory_only_on_cuda():
    runtime = RuntimeConfig(pin_memory=True, loader_workers=2, channels_last=True)
    assert loader_options(runtime, torch.device("cpu")) == LoaderOptions(2, False, True)
    assert loader_options(RuntimeConfig(), torch.device("cuda")).pin_memory


def test_cuda_is_never_assumed():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        resolve_device("cuda")


def test_loader_workers_draw_the_same_batches_for_the_same_seed():
    data = TensorDataset(torch.randn(40, 1, 4, 4), torch.arange(40))
    options = LoaderOptions(workers=1, channels_last=True)
    first = [labels for _, labels in loader(data, 8, True, 3, options)]
    again = [labels for _, labels in loader(data, 8, True, 3, options)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    images, _ = next(iter(loader(data, 8, True, 3, options)))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_place_puts_a_network_in_the_runs_memory_format(tmp_path):
    ctx = SearchContext.__new__(SearchContext)  # only device and memory_format matter here
    ctx.device, ctx.memory_format = torch.device("cpu"), torch.channels_last
    conv = ctx.place(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_computes_convolutions_in_bf16():
    conv = nn.Conv2d(1, 2, 3)
    with autocast(RuntimeConfig(precision="bf16"), torch.device("cpu")):
        assert conv(torch.randn(1, 1, 5, 5)).dtype == torch.bfloat16
    with autocast(RuntimeConfig(), torch.device("cpu")):
        assert conv(torch.randn(1, 1, 5, 5)).dtype == torch.float32


@pytest.mark.parametrize("method", ["darts", "mg-darts"])
def test_a_run_with_every_runtime_option_completes_on_cpu(tmp_path, registry, method):
    suite = parse_suite(
        {
            "methods": [method],
            "seeds": 1,
            "budget": "smoke",
            "runtime": {"precision": "bf16", "channels_last": True, "loader_workers": 1},
            "search": {"epochs": 2, "max_steps_per_epoch": 1},
            "eval": {"epochs": 1, "max_steps_per_epoch": 1},
        }
    )
    (config,) = expand_suite(suite, registry)
    record = execute_run(config, tmp_path, registry)
    assert record["status"] == "ok", record["error"]
    assert record["config"]["runtime"]["precision"] == "bf16"
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0
