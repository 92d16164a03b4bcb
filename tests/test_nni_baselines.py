"""NNI's one-shot strategies as suite methods: conversion, end-to-end runs, and life without NNI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datafiles import DARTS_V2_JSON, NNI_DARTS_V2_SAMPLE

from baselines.darts.genotype import Genotype
from baselines.nni_oneshot.arch_format import NniDartsSampleFormat
from baselines.nni_oneshot.availability import INSTALL_COMMAND
from baselines.nni_oneshot.sample import genotype_from_nni_sample
from mgas_bench.components import Architecture, NetworkSpec, SupernetSpec
from mgas_bench.config import ConfigError, expand_suite, load_suite, parse_suite
from mgas_bench.execution import execute_run
from mgas_bench.records import run_dir

NNI_METHODS = ["nni-darts", "nni-gumbel-darts", "nni-enas", "nni-random"]


# ------------------------------------------------------------------ conversion


def test_nni_darts_v2_export_converts_to_the_published_genotype():
    assert genotype_from_nni_sample(NNI_DARTS_V2_SAMPLE) == Genotype.from_json(DARTS_V2_JSON)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"normal/op_3_1": None}, "lacks 'normal/op_3_1'"),
        ({"normal/input_2_0": [0, 1]}, "expected one chosen input"),
        ({"normal/op_2_0": "conv_9x9"}, "unknown op 'conv_9x9'"),
        ({"normal/input_4_0": [4]}, "out of range"),
        ({"stem/width": 16}, "unexpected key"),
    ],
)
def test_a_broken_nni_export_is_refused_with_the_reason(change, message):
    sample = dict(NNI_DARTS_V2_SAMPLE)
    for key, value in change.items():
        if value is None:
            del sample[key]
        else:
            sample[key] = value
    with pytest.raises(ValueError, match=message):
        genotype_from_nni_sample(sample)


def test_nni_export_is_an_architecture_format_built_as_the_darts_network():
    fmt = NniDartsSampleFormat()
    assert fmt.matches(NNI_DARTS_V2_SAMPLE) and not fmt.matches(DARTS_V2_JSON)
    spec = NetworkSpec(in_channels=3, num_classes=10, input_size=32, channels=36, layers=20)
    net = fmt.build_network(Architecture(fmt.name, NNI_DARTS_V2_SAMPLE), spec)
    # 3.35 M: DARTS V2's published size on CIFAR-10 (3.3 M), auxiliary head excluded.
    assert sum(p.numel() for p in net.parameters()) == 3_349_342


def test_arch_info_reads_an_nni_export(tmp_path):
    path = tmp_path / "nni_darts_v2.json"
    path.write_text(json.dumps(NNI_DARTS_V2_SAMPLE))
    done = subprocess.run(
        [sys.executable, "-m", "mgas_bench", "arch", "info", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "(nni-darts-sample)" in done.stdout and "3.349 M" in done.stdout


def test_the_converted_genotype_is_the_network_nni_itself_builds():
    pytest.importorskip("nni")
    from nni.nas.hub.pytorch import DARTS

    # NNI freezes its own space with the sample: same ops on the same edges, same size.
    nni_net = DARTS.load_searched_model("darts-v2")
    ours = NniDartsSampleFormat().build_network(
        Architecture("nni-darts-sample", NNI_DARTS_V2_SAMPLE),
        NetworkSpec(in_channels=3, num_classes=10, input_size=32, channels=36, layers=20),
    )
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(nni_net) == count(ours) == 3_349_342


def test_darts_space_with_nni_batch_norms_has_the_weights_of_nni_supernet(registry):
    pytest.importorskip("nni")
    from nni.nas import strategy

    from baselines.nni_oneshot.space import SizedDartsSpace

    spec = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=4)
    supernet = strategy.DARTS().mutate_model(SizedDartsSpace(spec))
    alphas = {
        id(p)
        for module in supernet.modules()
        if module is not supernet and hasattr(module, "arch_parameters")
        for p in module.arch_parameters()
    }
    nni_weights = sum(p.numel() for p in supernet.parameters() if id(p) not in alphas)

    space = registry.get("search_space", "darts")
    ours = space.build(spec, {"search_affine": True, "pool_bn": False})
    darts = space.build(spec, {})
    count = lambda net: sum(p.numel() for p in net.weight_parameters())  # noqa: E731
    # The cross-check's `nni-space` variant: the same weights as NNI's supernet.
    assert count(ours) == nni_weights == 77_838
    assert count(darts) == 72_638  # affine-free batch norms, as in DARTS's search


# ------------------------------------------------------------------ end to end

TINY = {
    "search": {"epochs": 1, "cells": 3, "channels": 4, "max_steps_per_epoch": 2},
    "eval": {"epochs": 1, "layers": 2, "channels": 4},
}


@pytest.mark.parametrize("method", NNI_METHODS)
def test_each_nni_strategy_searches_and_is_scored_by_the_suite_evaluator(
    method, registry, tmp_path, capfd
):
    pytest.importorskip("nni")
    if registry.get("method", method).unavailable_reason():
        pytest.skip(registry.get("method", method).unavailable_reason())
    suite = parse_suite({"methods": [method], "seeds": 1, "budget": "smoke", **TINY})
    (config,) = expand_suite(suite, registry)
    record = execute_run(config, tmp_path, registry)
    assert record["status"] == "ok", record["error"]
    assert record["architecture_format"] == "darts-genotype"
    metrics = record["metrics"]
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["params_m"] > 0
    assert metrics["search_seconds"] > 0

    folder = run_dir(tmp_path, config)
    export = json.loads((folder / "nni" / "export.json").read_text())
    architecture = json.loads((folder / "architecture.json").read_text())
    assert genotype_from_nni_sample(export).to_json() == architecture
    # NNI's experiment folder, its log and its experiment manifest stay in the run's folder.
    assert (folder / "nni" / "experiment" / "log" / "experiment.log").exists()
    assert "experiment" in json.loads((folder / "nni" / ".experiment").read_text())
    manifest = Path.home() / "nni-experiments" / ".experiment"
    assert not manifest.exists() or str(folder) not in manifest.read_text()
    # NNI's and Lightning's chatter is in the run's log, not on the terminal.
    log = (folder / "log.txt").read_text()
    assert "[nni." in log and "search epoch 1:" in log
    out, err = capfd.readouterr()
    for chatter in ("nni.", "GPU available", "Experiment", "Gym has been"):
        assert chatter not in out + err


def test_nni_random_keeps_the_best_of_its_samples(registry, tmp_path):
    pytest.importorskip("nni")
    suite = parse_suite(
        {"methods": ["nni-random"], "seeds": 1, "options": {"nni-random": {"samples": 3}}, **TINY}
    )
    (config,) = expand_suite(suite, registry)
    record = execute_run(config, tmp_path, registry)
    assert record["status"] == "ok", record["error"]
    log = (run_dir(tmp_path, config) / "log.txt").read_text()
    scores = [
        float(line.split("shared-weight accuracy ")[1].split(":")[0])
        for line in log.splitlines()
        if "shared-weight accuracy" in line
    ]
    assert len(scores) == 3
    assert record["metrics"]["search_best_shared_accuracy"] == pytest.approx(max(scores), abs=1e-4)


def test_enas_batches_are_the_triples_nni_unpacks():
    pytest.importorskip("nni")
    from baselines.nni_oneshot.training import TrainThenValidate

    weights, arch = [("w", i) for i in range(5)], [("a", i) for i in range(3)]
    batches = list(TrainThenValidate(weights, arch, max_steps=2))
    assert batches == [(("w", 0), 0, 0), (("w", 1), 1, 0), (("a", 0), 0, 1), (("a", 1), 1, 1)]
    assert len(TrainThenValidate(weights, arch, max_steps=2)) == 4
    assert len(TrainThenValidate(weights, arch, max_steps=None)) == 8


# ------------------------------------------------------------------ without NNI


@pytest.fixture
def no_nni(monkeypatch):
    """Makes ``import nni`` fail, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "nni", None)


def test_without_nni_the_methods_say_how_to_install_it(registry, no_nni):
    for name in NNI_METHODS:
        reason = registry.get("method", name).unavailable_reason()
        assert reason and "nni" in reason and INSTALL_COMMAND in reason


def test_without_nni_the_default_suite_runs_the_rest(registry, no_nni):
    suite = load_suite(None)
    assert "nni-darts" in suite.methods
    methods = {config.method for config in expand_suite(suite, registry)}
    assert methods == set(suite.methods) - {"nni-darts"}


def test_without_nni_asking_for_an_nni_method_is_a_clear_error(registry, no_nni):
    with pytest.raises(ConfigError, match=r"nni-darts: nni not installed; install with: pip"):
        expand_suite(parse_suite({"methods": ["darts", "nni-darts"]}), registry)


def test_without_nni_mgas_bench_plugins_lists_them_as_unavailable(tmp_path):
    blocked = (
        "import sys; sys.modules['nni'] = None; "
        "from mgas_bench.cli import main; main(['plugins', '--json'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(done.stdout)}
    assert rows[("method", "darts")]["status"] == "available"
    for name in NNI_METHODS:
        status = rows[("method", name)]["status"]
        assert status.startswith("unavailable: nni") and INSTALL_COMMAND in status
