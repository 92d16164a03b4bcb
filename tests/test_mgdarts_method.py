"""The MG-DARTS search loop end to end on a tiny supernet."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from mgas_bench.components import (
    Architecture,
    ComponentLookup,
    DataRequest,
    Granularity,
    SearchBudget,
    SearchContext,
    UnknownComponentError,
)
from mgas_bench.data import search_data
from mgas_bench.evaluation import measure_network, network_spec
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat
from plugins.mgdarts.discretizers import LearnedThreshold
from plugins.mgdarts.method import MGDarts
from plugins.mgdarts.supernet import MGSupernet


@pytest.fixture(scope="module")
def digits(registry, tmp_path_factory):
    return registry.get("dataset", "digits").load(DataRequest(root=tmp_path_factory.mktemp("d")))


# ALGORITHM.md J: start t_op near sigma(0) = 0.5 and push hard, so that pruning happens in
# a handful of steps.
FAST = {"lam0": 1.0, "threshold_init": {"operation": 0.45, "filter": 0.45, "weight": 0.0}}


def _search(digits, registry, tmp_path, seed=0, rounds=None, **options):
    options = {**FAST, **options}
    rounds = [] if rounds is None else rounds
    method = MGDarts()
    stages: list[tuple[int, dict]] = []
    budget = SearchBudget(epochs=8, batch_size=64, cells=3, channels=4, max_steps_per_epoch=3)
    torch.manual_seed(seed)
    ctx = SearchContext(
        method=method.name,
        options={**method.default_options(), **options},
        budget=budget,
        data=search_data(digits, 0.5, 0, budget.batch_size, seed),
        device=torch.device("cpu"),
        seed=seed,
        run_dir=tmp_path,
        log=logging.getLogger("test-mgdarts"),
        components=registry,
        epoch_ended=lambda epoch, metrics, phase="search": rounds.append(metrics),
        stage_ended=lambda stage, metrics: stages.append((stage, metrics)),
    )
    return method.search(ctx), stages


def _spy_regrowth(monkeypatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    original = MGSupernet.regrow

    def regrow(self, cell, edge, op):
        calls.append((cell, edge, op))
        return original(self, cell, edge, op)

    monkeypatch.setattr(MGSupernet, "regrow", regrow)
    return calls


@pytest.fixture(scope="module")
def full_run(digits, registry, tmp_path_factory):
    """One default 3-stage search, watched: regrowth calls are recorded."""
    with pytest.MonkeyPatch.context() as patch:
        calls = _spy_regrowth(patch)
        result, stages = _search(digits, registry, tmp_path_factory.mktemp("full"))
    return result, stages, calls


def test_multi_stage_search_prunes_regrows_shrinks_and_exports(full_run, digits):
    result, stages, _ = full_run
    assert [s for s, _ in stages] == [1, 2, 3, 0]  # 0: the global phase
    assert result.metrics["alive_ops"] < 3 * 14 * 7  # something was pruned
    assert any(m["params"] < m["params_before_shrink"] for _, m in stages)  # D.5 shrank
    arch = result.architecture
    fmt = MGDartsGenotypeFormat()
    fmt.validate(arch.payload)
    assert arch.payload["init_channels"] == 4
    assert len(arch.payload["cells"]) == 3
    assert [len(ops) for ops in arch.payload["cells"]] == [len(m) for m in arch.tensors]
    widths = {op["channels"][0] for ops in arch.payload["cells"] for op in ops}
    assert widths - {4, 8, 16}  # per-op channel counts, narrower than the supernet's

    # ALGORITHM.md J.7: the evaluation network builds from the export (every mask is
    # checked against its conv), trains with aux loss and drop-path, and masked weights
    # stay exactly zero.
    model = fmt.build_network(arch, network_spec(digits.info, 99, 3, auxiliary=True))
    figures = measure_network(model, digits.info)
    assert figures["params_nonzero_m"] <= figures["params_m"]
    model.train()
    model.drop_path_prob = 0.2
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits, aux = model(x)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    loss.backward()
    optimiser.step()
    for conv in (m for m in model.modules() if hasattr(m, "weight_mask")):
        assert bool((conv.weight[conv.weight_mask == 0] == 0).all())


def test_the_search_reads_no_more_data_than_the_budget(digits, registry, tmp_path):
    """8 epochs of 3 batches over 3 stages, the global phase and 2 regrowths: 10 rounds of 2."""
    rounds: list[dict] = []
    _search(digits, registry, tmp_path, rounds=rounds, stage_target=0.0, global_target=0.0)
    assert len(rounds) == 10
    assert [r["data_epochs"] for r in rounds] == pytest.approx([2 * k / 3 for k in range(1, 11)])


def test_regrowth_revives_pruned_ops(full_run):
    result, stages, calls = full_run
    assert len(calls) == result.metrics["regrown_ops"] >= 1
    assert stages[0][1]["regrown_ops"] == 0  # never after stage 1 (ALGORITHM.md D.2)


def test_global_phase_re_prunes_the_whole_network(full_run, digits, registry, tmp_path):
    _, stages, _ = full_run
    global_stats = dict(stages)[0]
    assert global_stats["size_proxy"] < global_stats["size_proxy_start"]
    _, without = _search(digits, registry, tmp_path, global_phase=False)
    assert 0 not in dict(without)


def test_same_seed_same_architecture(full_run, digits, registry, tmp_path):
    first = full_run[0]
    second, _ = _search(digits, registry, tmp_path)
    assert first.architecture.payload == second.architecture.payload
    for a, b in zip(first.architecture.tensors, second.architecture.tensors, strict=True):
        for ma, mb in zip(a, b, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(ma, mb, strict=True))


def test_regrowth_off_never_revives_an_op(digits, registry, tmp_path, monkeypatch):
    calls = _spy_regrowth(monkeypatch)
    result, stages = _search(digits, registry, tmp_path, regrowth=False)
    assert calls == []
    assert result.metrics["regrown_ops"] == 0
    assert all(m.get("regrown_ops", 0) == 0 for _, m in stages)


def test_fixed_ratio_pruning_keeps_lambda_at_zero(digits, registry, tmp_path):
    _, stages = _search(digits, registry, tmp_path, adaptive_pruning=False, regrowth=False)
    assert all(m["lambda"] == 0.0 for _, m in stages)
    assert stages[0][1]["pruned_ops"] > 0  # the fixed ratio prunes even with λ = 0


def test_operations_only_prunes_no_filter_and_no_weight(digits, registry, tmp_path):
    result, _ = _search(digits, registry, tmp_path, granularities=["operation"], shrink=False)
    assert result.metrics["alive_ops"] < 3 * 14 * 7
    masks = [t for cell in result.architecture.tensors for op in cell for t in op]
    assert masks and all(bool((m == 1).all()) for m in masks)
    full, _ = _search(digits, registry, tmp_path, shrink=False)
    full_masks = [t for cell in full.architecture.tensors for op in cell for t in op]
    assert any(bool((m == 0).any()) for m in full_masks)


def test_single_stage_searches_the_whole_supernet(digits, registry, tmp_path):
    result, stages = _search(digits, registry, tmp_path, stages=1)
    assert [s for s, _ in stages] == [1, 0]
    assert isinstance(result.architecture, Architecture)


def test_a_plugin_granularity_takes_part_in_the_search(digits, registry, tmp_path):
    """The example plugin's ``edge`` granularity, attached through the hooks alone."""
    result, _ = _search(
        digits,
        registry,
        tmp_path,
        granularities=["operation", "filter", "weight", "edge"],
        threshold_init={**FAST["threshold_init"], "edge": 0.49},
        discretizers={"edge": "edge-threshold"},  # the plugin also registers edge-top1
    )
    total_edges = 3 * 14
    alive_edges = result.metrics["alive_edge_units"]
    assert 4 * 3 <= alive_edges < total_edges  # some pruned, every node keeps one
    # A pruned edge's operations are gone from the exported architecture.
    used = {
        (c, op["input"], op["output"])
        for c, ops in enumerate(result.architecture.payload["cells"])
        for op in ops
    }
    assert len(used) <= alive_edges


def test_discretizers_are_looked_up_by_name(digits, registry, tmp_path):
    with pytest.raises(UnknownComponentError, match="mg-threshold-operation"):
        _search(digits, registry, tmp_path, discretizers={"operation": "no-such"})
    with pytest.raises(ValueError, match="decides 'operation' units, not 'filter'"):
        _search(digits, registry, tmp_path, discretizers={"filter": "mg-threshold-operation"})


def test_an_unknown_granularity_lists_the_known_ones(digits, registry, tmp_path):
    with pytest.raises(UnknownComponentError, match="known granularities: edge, filter"):
        _search(digits, registry, tmp_path, granularities=["operation", "no-such"])


class _BareGranularity(Granularity):
    name, description = "bare", "a granularity with no gates to attach"


class _WithBare(ComponentLookup):
    """The registry plus one granularity that cannot take part in a pruning search."""

    def __init__(self, registry):
        self.registry = registry

    def get(self, kind, name):
        if (kind, name) == ("granularity", "bare"):
            return _BareGranularity()
        if (kind, name) == ("discretizer", "bare-step"):
            return LearnedThreshold("bare")
        return self.registry.get(kind, name)

    def names(self, kind):
        extra = {"granularity": ["bare"], "discretizer": ["bare-step"]}.get(kind, [])
        return self.registry.names(kind) + extra


def test_a_granularity_without_gates_is_refused(digits, registry, tmp_path):
    with pytest.raises(ValueError, match="'bare' cannot be searched by mg-darts"):
        _search(
            digits,
            _WithBare(registry),
            tmp_path,
            granularities=["operation", "bare"],
            discretizers={"bare": "bare-step"},
        )


def test_more_stages_than_cells_is_refused(digits, registry, tmp_path):
    with pytest.raises(ValueError, match="stages must be between 1 and 3, got 4"):
        _search(digits, registry, tmp_path, stages=4)
