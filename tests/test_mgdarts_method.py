"""The MG-DARTS search loop end to end on a tiny supernet (the method is not registered yet)."""

from __future__ import annotations

import logging

import pytest
import torch

from mgas_bench.components import Architecture, DataRequest, SearchBudget, SearchContext
from mgas_bench.data import search_data
from mgas_bench.evaluation import measure_network, network_spec
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat
from plugins.mgdarts.method import MGDarts


@pytest.fixture(scope="module")
def digits(registry, tmp_path_factory):
    return registry.get("dataset", "digits").load(DataRequest(root=tmp_path_factory.mktemp("d")))


# ALGORITHM.md J: start t_op near sigma(0) = 0.5 and push hard, so that pruning happens in
# a handful of steps.
FAST = {"lam0": 1.0, "threshold_init": {"operation": 0.45, "filter": 0.45, "weight": 0.0}}


def _search(digits, registry, tmp_path, seed=0, **options):
    options = {**FAST, **options}
    method = MGDarts()
    stages: list[tuple[int, dict]] = []
    budget = SearchBudget(epochs=12, batch_size=64, cells=3, channels=4, max_steps_per_epoch=3)
    torch.manual_seed(seed)
    ctx = SearchContext(
        method=method.name,
        options={**method.default_options(), **options},
        budget=budget,
        data=search_data(digits, 0.5, 0, budget.batch_size, seed, torch.device("cpu")),
        device=torch.device("cpu"),
        seed=seed,
        run_dir=tmp_path,
        log=logging.getLogger("test-mgdarts"),
        components=registry,
        epoch_ended=lambda epoch, metrics, phase="search": None,
        stage_ended=lambda stage, metrics: stages.append((stage, metrics)),
    )
    return method.search(ctx), stages


def test_multi_stage_search_prunes_regrows_and_exports(digits, registry, tmp_path):
    result, stages = _search(digits, registry, tmp_path)
    assert [s for s, _ in stages] == [1, 2, 3]
    assert result.metrics["alive_ops"] < 3 * 14 * 7  # something was pruned
    assert result.metrics["regrown_ops"] >= 1  # regrowth after stages 2 and 3
    arch = result.architecture
    fmt = MGDartsGenotypeFormat()
    fmt.validate(arch.payload)
    assert len(arch.payload["cells"]) == 3
    assert [len(ops) for ops in arch.payload["cells"]] == [len(m) for m in arch.tensors]
    spec = network_spec(digits.info, channels=4, layers=3, auxiliary=True)
    model = fmt.build_network(arch, spec)  # validates every mask against its conv's shape
    figures = measure_network(model, digits.info)
    assert figures["params_nonzero_m"] <= figures["params_m"]
    logits, aux = model.train()(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 10) and aux.shape == (4, 10)


def test_same_seed_same_architecture(digits, registry, tmp_path):
    first, _ = _search(digits, registry, tmp_path, seed=3)
    second, _ = _search(digits, registry, tmp_path, seed=3)
    assert first.architecture.payload == second.architecture.payload
    for a, b in zip(first.architecture.tensors, second.architecture.tensors, strict=True):
        for ma, mb in zip(a, b, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(ma, mb, strict=True))


def test_regrowth_off_never_revives_an_op(digits, registry, tmp_path):
    result, stages = _search(digits, registry, tmp_path, regrowth=False)
    assert result.metrics["regrown_ops"] == 0
    assert all(m["regrown_ops"] == 0 for _, m in stages)


def test_fixed_ratio_pruning_keeps_lambda_at_zero(digits, registry, tmp_path):
    _, stages = _search(digits, registry, tmp_path, adaptive_pruning=False, regrowth=False)
    assert all(m["lambda"] == 0.0 for _, m in stages)
    assert stages[0][1]["pruned_ops"] > 0  # the fixed ratio prunes even with λ = 0


def test_single_stage_searches_the_whole_supernet(digits, registry, tmp_path):
    result, stages = _search(digits, registry, tmp_path, stages=1)
    assert [s for s, _ in stages] == [1]
    assert isinstance(result.architecture, Architecture)
