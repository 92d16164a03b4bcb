"""The MG-DARTS supernet: gates, stage sub-networks, commits, losses and unit groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgas_bench.components import SupernetSpec
from plugins.mgdarts.gates import BinaryStep, binary_step, surrogate_gradient
from plugins.mgdarts.search_ops import (
    CONV_PRIMITIVES,
    PRIMITIVES,
    DilConv,
    SepConv,
    SkipReduce,
)
from plugins.mgdarts.supernet import MGSupernet, node_edge_slices, stage_ends

SPEC = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=6, channels=4)
SEP3, DIL3, AVG, MAX = (
    PRIMITIVES.index(n) for n in ("sep_conv_3x3", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3")
)
SKIP = PRIMITIVES.index("skip_connect")
NODE_SLICES = node_edge_slices(4)


def make_net(seed: int = 0, **kwargs) -> MGSupernet:
    torch.manual_seed(seed)
    return MGSupernet(SPEC, **kwargs)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 8, 8, generator=generator)
    return x, torch.randint(0, 10, (4,), generator=generator)


# ------------------------------------------------------------------------- gates


def test_binary_step_forward_is_zero_one_in_the_input_dtype():
    z = torch.tensor([-1.5, -0.6, -0.3, 0.0, 0.3, 0.6, 1.5], dtype=torch.float64)
    out = binary_step(z)
    assert out.dtype == torch.float64
    assert out.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_binary_step_backward_is_the_dst_surrogate():
    points = [0.0, 0.3, 0.6, 1.5, -0.3, -0.6, -1.5, 0.4, 1.0]
    expected = [2.0, 0.8, 0.4, 0.0, 0.8, 0.4, 0.0, 0.4, 0.4]
    z = torch.tensor(points, requires_grad=True)
    upstream = torch.linspace(1.0, 2.0, len(points))
    (BinaryStep.apply(z) * upstream).sum().backward()
    assert z.grad == pytest.approx((upstream * torch.tensor(expected)).tolist(), abs=1e-6)


# ---------------------------------------------------------------- forward/backward


def test_forward_backward_reaches_scores_thresholds_and_weights():
    net = make_net()
    x, y = batch()
    loss = F.cross_entropy(net.forward_logits(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    conv_cols = torch.tensor([p in CONV_PRIMITIVES for p in PRIMITIVES])
    for cell in net.cells:
        # Only the task loss: gradients reach thresholds through the surrogate alone.
        assert (cell.alpha.grad != 0).all()
        assert (cell.t_op.grad != 0).all()
        assert (cell.t_fil.grad[:, conv_cols] != 0).all()
        assert (cell.t_wt.grad[:, conv_cols] != 0).all()
        assert (cell.t_pre.grad != 0).all()
    for beta in net.beta_parameters():
        assert beta.grad is not None and beta.grad.abs().sum() > 0
    for param in net.weight_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


def test_forward_upto_each_stage_end_leaves_later_cells_without_gradient():
    net = make_net()
    x, _ = batch()
    for end in net.stage_ends(3):
        net.zero_grad(set_to_none=True)
        features = net(x, upto=end)
        side = net.cell_out_size(end)
        assert features.shape == (4, net.cell_out_channels(end), side, side)
        features.square().mean().backward()
        for i, cell in enumerate(net.cells):
            grads = [p.grad for p in cell.parameters()]
            if i <= end:
                assert cell.alpha.grad is not None
            else:
                assert all(g is None for g in grads)
        assert net.classifier.weight.grad is None


def test_stage_ends_and_reductions():
    assert stage_ends(6, 3) == [1, 3, 5]
    assert stage_ends(6, 1) == [5]
    assert stage_ends(6, 2) == [2, 5]
    assert stage_ends(8, 3) == [1, 4, 7]
    assert stage_ends(14, 3) == [3, 8, 13]
    with pytest.raises(ValueError):
        stage_ends(2, 3)
    net = make_net()
    assert sorted(net.reductions) == [2, 4]
    assert [net.cell_out_channels(i) for i in range(6)] == [16, 16, 32, 32, 64, 64]
    assert [net.cell_out_size(i) for i in range(6)] == [8, 8, 4, 4, 2, 2]
    with pytest.raises(NotImplementedError, match="imagenet"):
        MGSupernet(SupernetSpec(3, 10, 32, 6, 4, network_style="imagenet"))


# ---------------------------------------------------------------------- op gates


def test_committed_off_ops_never_run():
    net = make_net()
    off = {(0, SEP3), (3, DIL3), (7, MAX)} | {(5, o) for o in range(len(PRIMITIVES))}
    for edge, op in off:
        net.set_op_alive(0, edge, op, False)
    calls: set[tuple[int, int]] = set()
    for edge, mixed in enumerate(net.cells[0].edges):
        for index, op in enumerate(mixed.ops):
            op.register_forward_hook(lambda *_, key=(edge, index): calls.add(key))
    out = net(torch.randn(2, 1, 8, 8), upto=0)
    assert torch.isfinite(out).all()
    everything = {(e, o) for e in range(14) for o in range(len(PRIMITIVES))}
    assert calls == everything - off
    assert not any(net.op_alive(0, e, o) for e, o in off)
    assert len(net.alive_ops(0)) == len(everything) - len(off)


def test_keep_one_rule_forces_the_last_alive_op_not_the_best_scored():
    net = make_net()
    cell = net.cells[0]
    with torch.no_grad():
        cell.alpha.normal_()
        cell.alpha[13, SKIP] = 5.0  # the best score of node 5, yet not its survivor
        cell.t_op.fill_(10.0)  # sigmoid < 1: every dynamic gate is 0
    net.set_op_alive(0, 13, MAX, False)
    gates = net.op_gates(0).detach()
    survivors = {}
    for node, rows in enumerate(NODE_SLICES):
        on = gates[rows].nonzero().tolist()
        assert len(on) == 1
        survivors[node] = (rows.start + on[0][0], on[0][1])
    assert survivors == {0: (1, MAX), 1: (4, MAX), 2: (8, MAX), 3: (13, AVG)}

    outputs = {}
    for node, (edge, op) in survivors.items():
        hook = lambda _m, _i, out, node=node: outputs.__setitem__(node, out)  # noqa: E731
        cell.edges[edge].ops[op].register_forward_hook(hook)
    features = net(torch.randn(2, 1, 8, 8), upto=0)
    for node, (edge, op) in survivors.items():
        expected = torch.sigmoid(cell.alpha[edge, op]) * outputs[node]
        assert torch.allclose(features[:, 4 * node : 4 * node + 4], expected, atol=1e-6)

    # One dynamic gate on anywhere in the node: nothing is forced.
    with torch.no_grad():
        cell.t_op[9, SEP3] = 0.0
    assert net.op_gates(0).detach()[NODE_SLICES[3]].nonzero().tolist() == [[0, SEP3]]


# ------------------------------------------------------------------------ commit


def test_commit_makes_dynamic_zeros_permanent_at_every_granularity():
    net = make_net()
    c0 = net.cells[0]
    sep = c0.edges[2].ops[SEP3]
    dil = c0.edges[4].ops[DIL3]
    with torch.no_grad():
        c0.alpha[0].fill_(-3.0)  # sigmoid ~ 0.05 < 0.1: edge 0 gated off, edge 1 keeps node 2 alive
        c0.t_op.fill_(0.1)
        sep.gate_mid.beta[:2] = -3.0
        c0.t_fil[2, SEP3] = 0.1
        threshold = dil.dw.weight.abs().median()
        c0.t_wt[4, DIL3] = threshold
        net.cells[5].t_op.fill_(10.0)  # outside `upto`: must not be committed
    expected_weights = (dil.dw.weight.abs() > threshold).float()
    # t_wt is shared by the op's convs, so the pointwise conv loses its small weights too.
    expected_pw = (dil.pw.weight.abs() > threshold).float()
    pruned = net.commit(upto=1)

    assert pruned["operation"] == len(PRIMITIVES)
    assert c0.op_mask[0].sum() == 0 and c0.op_mask[1:].all()
    assert sep.gate_mid.filter_mask.tolist() == [0, 0, 1, 1]
    assert torch.equal(dil.dw.weight_mask, expected_weights)
    assert pruned["filter"] == 2
    assert torch.equal(dil.pw.weight_mask, expected_pw)
    assert pruned["weight"] == int((expected_weights == 0).sum() + (expected_pw == 0).sum())
    assert (expected_weights == 0).any()
    assert net.cells[5].op_mask.all()

    # Only thresholded filter gates commit: the stride-2 skip's gate has none (I.10).
    red = net.cells[2]
    with torch.no_grad():
        red.t_fil.fill_(10.0)
    net.commit(upto=2)
    assert red.edges[0].ops[SEP3].gate_out.filter_mask.sum() == 0
    assert red.edges[0].ops[SKIP].gate_out.filter_mask.all()
    # All dynamic op gates off: every node keeps exactly one op.
    with torch.no_grad():
        red.t_op.fill_(10.0)
    net.commit(upto=2)
    for rows in NODE_SLICES:
        assert red.op_mask[rows].sum() == 1
    with torch.no_grad():
        red.t_op.fill_(0.0)
    assert net.num_alive_ops(upto=2) == net.num_alive_ops(upto=1) + 4


# ------------------------------------------------------------------ granularities


def test_disabled_weight_granularity_keeps_weight_gates_open():
    net = make_net(granularities=("operation", "filter"))
    x, _ = batch()
    before = net(x, upto=1).detach()
    with torch.no_grad():
        for t in net.threshold_parameters("weight"):
            t.fill_(100.0)
    after = net(x, upto=1).detach()
    assert torch.equal(before, after)
    for cell in net.cells:
        hard = cell.unit_gates((cell.op_mask > 0).tolist()).weight_hard()
        assert len(hard) == 14 * 12 and all(gate.all() for gate in hard.values())
    assert net.unit_groups("weight") == []
    net.threshold_regulariser().backward()
    assert all(t.grad is None for t in net.threshold_parameters("weight"))
    # Per cell at t = 0: 98 ops + 2 preprocess gates + 56 sep/dil filter thresholds.
    assert net.threshold_regulariser().item() == pytest.approx(6 * (98 + 2 + 56))

    full = make_net()
    assert full.threshold_regulariser().item() == pytest.approx(6 * (98 + 2 + 2 * 56))
    with torch.no_grad():
        for t in full.threshold_parameters("weight"):
            t.fill_(100.0)
    assert not torch.equal(full(x, upto=1).detach(), before)


def test_disabled_operation_granularity_keeps_every_committed_op():
    net = make_net(granularities=("filter", "weight"))
    net.set_op_alive(0, 3, SEP3, False)
    with torch.no_grad():
        for t in net.threshold_parameters("operation"):
            t.fill_(10.0)
    assert torch.equal(net.op_gates(0), net.cells[0].op_mask)
    assert net.commit()["operation"] == 0


# ------------------------------------------------------------------------ losses


def _reference_op_sparsity(
    alpha: torch.Tensor, alive: torch.Tensor, gates: torch.Tensor, count_rows: list[slice]
) -> float:
    """R_op by explicit loops; ``count_rows[node]`` are the edges whose gates give n_node."""
    total = 0.0
    for node, rows in enumerate(NODE_SLICES):
        s = sum(
            torch.sigmoid(alpha[e, o]).item()
            for e in range(rows.start, rows.stop)
            for o in range(alpha.shape[1])
            if alive[e, o]
        )
        n = int((gates[count_rows[node]] > 0).sum())
        for e in range(rows.start, rows.stop):
            for o in range(alpha.shape[1]):
                if gates[e, o] > 0:
                    total += math.log1p(n * torch.sigmoid(alpha[e, o]).item() / s)
    return total


def test_op_sparsity_counts_each_nodes_own_edges():
    net = make_net()
    cell = net.cells[0]
    with torch.no_grad():
        cell.alpha.normal_()
        cell.t_op[2:5] = 0.95  # node 3 keeps (almost) nothing, nodes 4 and 5 keep everything
    net.set_op_alive(0, 9, SEP3, False)
    gates = net.op_gates(0).detach()
    alive = cell.op_mask.bool()
    correct = _reference_op_sparsity(cell.alpha.detach(), alive, gates, NODE_SLICES)
    node3 = NODE_SLICES[1]
    buggy = _reference_op_sparsity(
        cell.alpha.detach(), alive, gates, [NODE_SLICES[0], node3, node3, node3]
    )
    value = net.op_sparsity([0])
    assert value.item() == pytest.approx(correct, rel=1e-5)
    assert abs(buggy - correct) > 1.0
    assert net.op_sparsity([0, 1]).item() == pytest.approx(
        correct + net.op_sparsity([1]).item(), rel=1e-5
    )
    value.backward()
    assert cell.alpha.grad is not None and cell.alpha.grad.abs().sum() > 0


def test_size_proxy_counts_alive_convs_and_real_reduction_skips():
    net = make_net()
    # Per edge of a C-channel cell: sep3 18C+2C^2, sep5 50C+2C^2, dil3 9C+C^2, dil5 25C+C^2;
    # plus c^2 per stride-2 skip (8 per reduction cell).
    per_cell = {c: 14 * (102 * c + 6 * c * c) for c in (4, 8, 16)}
    expected = 2 * per_cell[4] + 2 * per_cell[8] + 2 * per_cell[16] + 8 * 8**2 + 8 * 16**2
    assert net.size_proxy() == pytest.approx(expected * 1e-6)
    assert net.size_proxy(upto=1) == pytest.approx(2 * per_cell[4] * 1e-6)

    full = net.size_proxy()
    net.set_op_alive(0, 0, SEP3, False)
    assert full - net.size_proxy() == pytest.approx(104e-6)  # C=4: 36 + 16 + 36 + 16
    full = net.size_proxy()
    net.set_op_alive(2, 0, SKIP, False)  # stride-2 skip in the reduction cell 2
    assert full - net.size_proxy() == pytest.approx(64e-6)
    full = net.size_proxy()
    net.set_op_alive(1, 0, SKIP, False)  # identity in cell 1 (the reference's off-by-one cell)
    assert net.size_proxy() == pytest.approx(full)
    with torch.no_grad():
        net.cells[0].edges[1].ops[DIL3].gate_out.filter_mask[:2] = 0
    assert full - net.size_proxy() == pytest.approx(2 * 4e-6)


# ------------------------------------------------------------ parameters, groups


def test_parameter_sets_are_disjoint_and_complete():
    net = make_net()
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert len(net.alpha_parameters()) == 6 and len(net.alpha_parameters(upto=1)) == 2
    assert len(net.threshold_parameters("filter")) == 12
    # The accessors partition the architecture parameters, so each can get its own lr.
    split = [
        *net.alpha_parameters(),
        *net.beta_parameters(),
        *(p for g in ("operation", "filter", "weight") for p in net.threshold_parameters(g)),
    ]
    assert len(split) == len({id(p) for p in split}) == len(arch)
    t_wt = net.threshold_parameters("weight")
    net.reset_thresholds(operation=0.45, weight=0.2)
    assert net.threshold_parameters("weight") == t_wt
    assert (net.cells[3].t_op == 0.45).all() and (net.cells[3].t_wt == 0.2).all()
    assert (net.cells[3].t_pre == 0).all()


def test_unit_groups_shapes_and_views():
    net = make_net()
    ops = net.unit_groups("operation")
    assert len(ops) == 6 * 4
    group = ops[4 * 3 + 2]  # cell 3, node 4
    assert (
        group.meta["cell"] == 3 and group.meta["node"] == 4 and group.meta["inputs"] == [0, 1, 2, 3]
    )
    assert group.scores.shape == group.mask.shape == group.meta["threshold"].shape == (4, 7)
    assert group.labels == PRIMITIVES and group.scores.requires_grad
    group.mask[1, SEP3] = 0
    assert not net.op_alive(3, 6, SEP3)

    filters = net.unit_groups("filter")
    # Per cell: 2 preprocess + 14 edges x (sep 2 + sep 2 + dil 1 + dil 1); +8 skips if reducing.
    assert len(filters) == 6 * 86 + 2 * 8
    by_key = {g.key: g for g in filters}
    mid = by_key["cell4/edge3/sep_conv_5x5/mid"]
    assert mid.scores.shape == mid.mask.shape == (16,)
    assert mid.meta["position"] == "mid" and mid.meta["threshold"].shape == ()
    mid.mask[0] = 0
    assert net.cells[4].edges[3].ops[2].gate_mid.filter_mask[0] == 0
    assert by_key["cell2/edge0/skip_connect/out"].meta["threshold"] is None
    assert by_key["cell0/preprocess1"].meta["position"] == "preprocess1"

    weights = net.unit_groups("weight")
    assert len(weights) == 6 * 14 * 12
    pw = next(g for g in weights if g.key == "cell1/edge2/dil_conv_5x5/conv1")
    conv = net.cells[1].edges[2].ops[4].pw
    assert pw.scores.shape == pw.mask.shape == conv.weight.shape
    assert not pw.scores.requires_grad
    pw.mask[0, 0] = 0
    assert conv.weight_mask[0, 0].item() == 0
    assert make_net(granularities=("operation",)).unit_groups("filter") == []


def test_regrow_restores_a_fresh_op():
    net = make_net()
    net.set_op_alive(0, 2, SEP3, False)
    op = net.cells[0].edges[2].ops[SEP3]
    assert isinstance(op, SepConv)
    with torch.no_grad():
        op.gate_out.beta.fill_(1.0)
        op.gate_out.filter_mask[0] = 0
        op.pw2.weight_mask.zero_()
        op.pw2.weight.fill_(7.0)
    net.regrow(0, 2, SEP3)
    assert net.op_alive(0, 2, SEP3)
    assert (op.gate_out.beta == 0).all() and op.gate_out.filter_mask.all()
    assert op.pw2.weight_mask.all() and not (op.pw2.weight == 7.0).any()
    assert isinstance(net.cells[2].edges[0].ops[SKIP], SkipReduce)
    assert isinstance(net.cells[2].edges[0].ops[DIL3], DilConv)


def test_construction_is_deterministic_under_a_seed():
    a, b, c = make_net(seed=5), make_net(seed=5), make_net(seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ------------------------------------------------------------------ discretizers


def test_cell_gates_equal_gating_each_module_on_its_own():
    """The one-call-per-cell gates give each module m = H(score - t) * M, and its gradients."""
    net = make_net()
    cell = net.cells[0]
    sep = cell.op(3, SEP3)
    with torch.no_grad():
        cell.t_wt.uniform_(0.0, 0.3)
        cell.t_fil.uniform_(0.3, 0.6)
        for gate in net.beta_parameters():
            gate.normal_()
        sep.pw1.weight_mask[0].zero_()
        sep.gate_out.filter_mask[1] = 0.0
    gates = cell.unit_gates((cell.op_mask > 0).tolist())

    t_wt, t_fil = cell.t_wt[3, SEP3], cell.t_fil[3, SEP3]
    for conv in (sep.dw1, sep.pw1, sep.dw2, sep.pw2):
        expected = binary_step(conv.weight.abs() - t_wt) * conv.weight_mask
        assert torch.equal(gates.weight_hard()[conv], expected)
        assert torch.equal(gates.weight(conv), conv.weight * expected)
    soft = torch.sigmoid(sep.gate_out.beta)
    expected = binary_step(soft - t_fil) * sep.gate_out.filter_mask
    assert torch.equal(gates.filter_hard()[sep.gate_out], expected)
    assert torch.equal(gates.scale(sep.gate_out), soft * expected)
    pre = cell.preprocess1.gate
    expected = binary_step(torch.sigmoid(pre.beta) - cell.t_pre[1]) * pre.filter_mask
    assert torch.equal(gates.filter_hard()[pre], expected)

    # Gradients reach each op's own thresholds, as summed over its own units.
    (gates.weight(sep.pw1).sum() + gates.scale(sep.gate_out).sum()).backward()
    own = torch.zeros_like(cell.t_wt, dtype=torch.bool)
    own[3, SEP3] = True
    assert cell.t_wt.grad[own].item() != 0 and (cell.t_wt.grad[~own] == 0).all()
    assert cell.t_fil.grad[own].item() != 0 and (cell.t_fil.grad[~own] == 0).all()
    z = sep.pw1.weight.abs() - t_wt
    manual = -(sep.pw1.weight * sep.pw1.weight_mask * surrogate_gradient(z)).sum()
    assert cell.t_wt.grad[3, SEP3].item() == pytest.approx(manual.item(), rel=1e-5)


def test_each_cell_calls_a_granularitys_discretizer_once_per_pass():
    net = make_net()
    calls: dict[str, int] = {"operation": 0, "filter": 0, "weight": 0}

    def counting(granularity):
        def discretize(group):
            calls[granularity] += 1
            assert group.meta["threshold"].shape == group.scores.shape
            if granularity != "operation":  # one segment per gated module, covering every unit
                assert sum(group.meta["segments"]) == group.scores.numel()
            return binary_step(group.scores - group.meta["threshold"])

        return discretize

    net.use_discretizers({g: counting(g) for g in calls})
    x, _ = batch()
    net(x)
    # The op gates are evaluated once for the mixture; the other two once per cell.
    assert calls == {"operation": SPEC.cells, "filter": SPEC.cells, "weight": SPEC.cells}


def test_gates_call_the_discretizers_they_are_given():
    net = make_net()
    seen: dict[str, int] = {"operation": 0, "filter": 0, "weight": 0}

    def prune_all(granularity):
        def discretize(group):
            seen[granularity] += 1
            assert group.meta["threshold"] is not None
            return torch.zeros_like(group.scores)

        return discretize

    net.use_discretizers({g: prune_all(g) for g in seen})
    x, _ = batch()
    net(x)
    assert all(count > 0 for count in seen.values())
    cell = net.cells[0]
    gates = cell.op_gates()
    # Everything is gated off, so only the keep-one rule keeps each node alive.
    assert [int(gates[rows].sum()) for rows in NODE_SLICES] == [1, 1, 1, 1]
    sep = cell.op(0, SEP3)
    gates = cell.unit_gates((cell.op_mask > 0).tolist())
    assert gates.filter_hard()[sep.gate_mid].sum() == 0
    assert gates.weight_hard()[sep.dw1].sum() == 0


def test_use_discretizers_refuses_a_granularity_it_cannot_gate():
    with pytest.raises(ValueError, match="no native gates for granularity"):
        make_net().use_discretizers({"edge": lambda group: group.scores})


def test_learned_threshold_is_the_hard_step_of_score_minus_threshold():
    from mgas_bench.components import UnitGroup
    from plugins.mgdarts.discretizers import LearnedThreshold

    threshold = torch.tensor(0.5, requires_grad=True)
    scores = torch.tensor([0.2, 0.6, 0.9])
    group = UnitGroup("g", "filter", scores, torch.ones(3), meta={"threshold": threshold})
    gate = LearnedThreshold("filter").discretize(group, {})
    assert gate.tolist() == [0.0, 1.0, 1.0]
    gate.sum().backward()
    assert threshold.grad is not None and threshold.grad < 0  # raising t closes gates
    with pytest.raises(ValueError, match="needs a learnable threshold"):
        LearnedThreshold("filter").discretize(UnitGroup("g", "filter", scores, torch.ones(3)), {})
