"""The assertions of ALGORITHM.md J on one watched search (a 3-stage, 3-cell digits search).

J.1 (the step and its surrogate) is in test_mgdarts_supernet.py, J.5 (shrinking) in
test_mgdarts_shrink.py, J.7 (export and evaluation network) and J.8 (determinism) in
test_mgdarts_method.py. This file checks J.2, J.3, J.4 and J.6 from inside a real search.
"""

from __future__ import annotations

import logging

import pytest
import torch

from mgas_bench.components import DataRequest, SearchBudget, SearchContext
from mgas_bench.data import search_data
from plugins.mgdarts.method import MGDarts, MGDartsSearch
from plugins.mgdarts.supernet import node_edge_slices

FAST = {
    "lam0": 0.2,
    "lam_start": 0.2,
    "threshold_init": {"operation": 0.45, "filter": 0.45, "weight": 0.0},
}


def _snapshot(model) -> dict:
    return {
        "op_masks": [cell.op_mask.clone() for cell in model.cells],
        "filter_masks": [m.clone() for n, m in model.named_buffers() if n.endswith("filter_mask")],
        "weight_masks": [m.clone() for n, m in model.named_buffers() if n.endswith("weight_mask")],
        "alpha": [cell.alpha.detach().clone() for cell in model.cells],
    }


@pytest.fixture(scope="module")
def watched(registry, tmp_path_factory):
    digits = registry.get("dataset", "digits").load(DataRequest(root=tmp_path_factory.mktemp("d")))
    method = MGDarts()
    budget = SearchBudget(epochs=8, batch_size=64, cells=3, channels=4, max_steps_per_epoch=3)
    snapshots: dict[str, dict] = {}
    events: dict[str, list] = {"optimisers": [], "regrown": []}
    holder: dict[str, MGDartsSearch] = {}

    def stage_ended(stage, metrics):
        # Shrinking resets filter masks to ones, so J.2 looks at the state before it.
        snapshots[f"stage{stage}"] = _snapshot(holder["search"].model)

    ctx = SearchContext(
        method=method.name,
        options={**method.default_options(), **FAST},
        budget=budget,
        data=search_data(digits, 0.5, 0, budget.batch_size, 0),
        device=torch.device("cpu"),
        seed=0,
        run_dir=tmp_path_factory.mktemp("run"),
        log=logging.getLogger("test-mgdarts-j"),
        components=registry,
        epoch_ended=lambda epoch, metrics, phase="search": None,
        stage_ended=stage_ended,
    )
    search = MGDartsSearch(ctx)
    holder["search"] = search
    start = _snapshot(search.model)
    build, shrink, regrow = search._optimisers, search.model.shrink, search.model.regrow

    def optimisers(end, head, adaptive):
        built = build(end, head, adaptive)
        weights = {id(p) for p in built["weights"].param_groups[0]["params"]}
        events["optimisers"].append((weights, {id(p) for p in search.model.weight_parameters()}))
        return built

    def shrink_and_snapshot(upto):
        snapshots[f"before-shrink{len([k for k in snapshots if 'before' in k])}"] = _snapshot(
            search.model
        )
        return shrink(upto)

    def regrow_and_record(cell, edge, op):
        target = search.model.cells[cell]
        alpha_before = target.alpha[edge, op].item()
        regrow(cell, edge, op)
        module = target.op(edge, op)
        gates = target.unit_gates((target.op_mask > 0).tolist())
        out = module(torch.randn(2, target.C, 8, 8), gates)
        events["regrown"].append(
            {
                "alpha_before": alpha_before,
                "alpha_after": target.alpha[edge, op].item(),
                "alive": search.model.op_alive(cell, edge, op),
                "out_channels": out.shape[1],
                "width": target.op_channels(edge, op)[-1],
                "finite": bool(torch.isfinite(out).all()),
            }
        )

    search._optimisers = optimisers
    search.model.shrink = shrink_and_snapshot
    search.model.regrow = regrow_and_record
    result = search.run()
    return start, snapshots, events, result, search


def test_j2_after_stage_1_every_granularity_pruned_and_every_node_kept_an_op(watched):
    start, snapshots, _, _, _ = watched
    stage1 = snapshots["before-shrink0"]
    assert stage1["op_masks"][0].sum() < start["op_masks"][0].sum()
    assert any(bool((m == 0).any()) for m in stage1["filter_masks"])
    assert any(bool((m == 0).any()) for m in stage1["weight_masks"])
    for rows in node_edge_slices(4):
        assert stage1["op_masks"][0][rows].sum() >= 1


def test_j3_stage_2_re_prunes_a_stage_1_cell(watched):
    _, snapshots, _, _, _ = watched
    after_stage1 = snapshots["stage1"]["op_masks"][0]
    after_stage2 = snapshots["before-shrink1"]["op_masks"][0]
    # Regrowth only adds ops, so an op alive after stage 1 and dead after stage 2 was re-pruned.
    assert bool(((after_stage1 == 1) & (after_stage2 == 0)).any())


def test_j4_regrown_ops_are_alive_keep_their_alpha_and_run(watched):
    _, _, events, _, _ = watched
    assert events["regrown"]
    for op in events["regrown"]:
        # α is never offset by -10000 here, so regrowing restores it exactly.
        assert op["alpha_after"] == op["alpha_before"]
        assert op["alive"] and op["finite"]
        assert op["out_channels"] == op["width"]


def test_j6_every_optimiser_is_rebuilt_over_the_current_parameters(watched):
    _, _, events, _, _ = watched
    assert len(events["optimisers"]) >= 4 + 2  # 3 stages, the global phase, 2 regrowths
    for optimised, current in events["optimisers"]:
        assert optimised >= current  # no weight of the network is left to a stale optimiser
