"""The DARTS search: supernet, unit groups, derivation, architect, pruning, end to end.

Supernets here are tiny (1 input channel, 8x8 images, 4 channels, 3 cells) so that
the whole file runs in seconds on a slow CPU. Three cells is the smallest depth
with both cell types: with the DARTS rule (reductions at cells // 3 and
2 * cells // 3) one cell has no reduction cell and two cells have no normal cell.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.darts.discretizers import TopEdgesDiscretizer, darts_top2
from baselines.darts.genotype import Genotype, validate_genotype_json
from baselines.darts.method import Architect, Darts, genotype_from_groups
from baselines.darts.ops import PRIMITIVES, SepConv
from baselines.darts.search_kernels import depthwise_conv, pointwise_conv
from baselines.darts.search_space import DartsSupernet, edge_inputs
from mgas_bench.components import (
    Architecture,
    ComponentLookup,
    DataRequest,
    Discretizer,
    SearchBudget,
    SearchContext,
    SupernetSpec,
    UnitGroup,
)
from mgas_bench.data import search_data
from plugins.granularities import FixedRatioPruner

OP = {name: index for index, name in enumerate(PRIMITIVES)}
N_OPS = len(PRIMITIVES)
N_EDGES = 14  # 2 + 3 + 4 + 5 edges into the 4 intermediate nodes
ARCH_OPTIONS = {"arch_lr": 3e-4, "arch_weight_decay": 1e-3}
CPU = torch.device("cpu")


def make_supernet(cells: int = 3, seed: int = 0, **options: bool) -> DartsSupernet:
    torch.manual_seed(seed)
    spec = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=cells, channels=4)
    return DartsSupernet(spec, **options)


def make_batch(
    n: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 8, 8, generator=gen, dtype=dtype)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return images, labels


def spread_alphas(model: DartsSupernet, seed: int = 1, std: float = 0.5) -> None:
    """Give the alphas distinct, non-uniform values (the init is nearly uniform)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for alpha in model.arch_parameters():
            alpha.copy_(std * torch.randn(alpha.shape, generator=gen, dtype=alpha.dtype))


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def sgd(model: DartsSupernet, momentum: float = 0.9, weight_decay: float = 0.0):
    return torch.optim.SGD(
        model.weight_parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )


# ------------------------------------------------------------------- supernet


def test_forward_gives_logits_and_parameter_sets_are_separated():
    model = make_supernet()
    images, _ = make_batch(5)
    logits = model(images)
    assert logits.shape == (5, 10)
    assert torch.isfinite(logits).all()

    arch = model.arch_parameters()
    assert len(arch) == 2
    assert arch[0] is model.alphas_normal and arch[1] is model.alphas_reduce
    assert arch[0].shape == arch[1].shape == (N_EDGES, N_OPS)

    weights = model.weight_parameters()
    weight_ids = {id(p) for p in weights}
    assert not weight_ids & {id(p) for p in arch}
    everything = {id(p) for p in model.parameters()}
    assert weight_ids | {id(p) for p in arch} == everything
    assert len(weights) == len(weight_ids) == len(everything) - 2
    # Masks are buffers, not parameters of either kind.
    assert id(model.mask_normal) not in everything


def test_batch_norm_flavour_is_an_option_of_the_darts_space(registry):
    space = registry.get("search_space", "darts")
    spec = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=4)
    defaults = Darts("darts", second_order=False).default_options()
    darts = space.build(spec, defaults)
    nni_like = space.build(spec, {**defaults, "search_affine": True, "pool_bn": False})

    def cell_norms(net: nn.Module) -> list[nn.BatchNorm2d]:
        return [m for m in net.cells.modules() if isinstance(m, nn.BatchNorm2d)]

    # DARTS's model_search.py: no affine batch norm in a cell, and one after each pool.
    assert not any(bn.affine for bn in cell_norms(darts))
    assert all(bn.affine for bn in cell_norms(nni_like))
    pools_per_cell = 2 * N_EDGES
    assert len(cell_norms(darts)) - len(cell_norms(nni_like)) == 3 * pools_per_cell
    images, _ = make_batch(4)
    assert nni_like(images).shape == (4, 10)


def test_operation_groups_shapes_scores_and_meta():
    model = make_supernet()
    spread_alphas(model)
    groups = model.unit_groups("operation")
    assert len(groups) == 8
    expected_keys = [f"{t}/node{n}" for t in ("normal", "reduce") for n in (2, 3, 4, 5)]
    assert [g.key for g in groups] == expected_keys
    for group in groups:
        node = group.meta["node"]
        assert group.granularity == "operation"
        assert group.meta["cell_type"] == group.key.split("/")[0]
        assert group.meta["inputs"] == list(range(node))
        assert group.scores.shape == group.mask.shape == (node, N_OPS)
        assert group.labels == PRIMITIVES
        torch.testing.assert_close(group.scores.sum(dim=1), torch.ones(node))
        assert (group.mask == 1).all()
        # Scores are live: they carry the gradient back to the alphas.
        assert group.scores.requires_grad

    # Scores are the softmax of the matching rows of the matching alphas.
    offset = 0
    for group in groups[4:]:
        rows = model.alphas_reduce[offset : offset + group.meta["node"]]
        torch.testing.assert_close(group.scores, F.softmax(rows, dim=-1))
        offset += group.meta["node"]


def test_group_mask_is_a_view_of_the_supernet_buffer():
    model = make_supernet()
    groups = model.unit_groups("operation")
    node3_normal, node2_reduce = groups[1], groups[4]
    node3_normal.mask.zero_()
    node2_reduce.mask[1, OP["sep_conv_3x3"]] = 0
    # node3 reads edges 2..4 of the normal cell's 14 edges.
    assert (model.mask_normal[2:5] == 0).all()
    assert model.mask_normal.sum() == (N_EDGES - 3) * N_OPS
    assert model.mask_reduce[1, OP["sep_conv_3x3"]] == 0
    assert model.mask_reduce.sum() == N_EDGES * N_OPS - 1
    # Fresh groups see the committed mask.
    assert (model.unit_groups("operation")[1].mask == 0).all()


@pytest.mark.parametrize("granularity", ["filter", "weight", "nonsense"])
def test_other_granularities_have_no_groups(granularity):
    assert make_supernet().unit_groups(granularity) == []


# --------------------------------------------------------------------- masking


def _output_module(op: nn.Module) -> nn.Module:
    """The module that computes a candidate's output (a cell shares what comes before it)."""
    if isinstance(op, SepConv):
        return op[1][-1]
    if isinstance(op, nn.Sequential):  # a DilConv's or a pool's batch norm
        return op[-1]
    return op


def _record_candidate_calls(model: DartsSupernet) -> list[tuple[int, int, int]]:
    """Hook every candidate op; the list fills with (cell, edge, op) per execution."""
    calls: list[tuple[int, int, int]] = []
    for c, cell in enumerate(model.cells):
        for e, mixed in enumerate(cell.edges):
            for o, op in enumerate(mixed.candidates):
                _output_module(op).register_forward_hook(
                    lambda *_, key=(c, e, o): calls.append(key)
                )
    return calls


def _reference_forward(model: DartsSupernet, images: torch.Tensor) -> torch.Tensor:
    """DARTS's own forward: every candidate module called on its edge's input, nothing shared."""
    s0 = s1 = model.stem(images)
    for cell in model.cells:
        cell_type = "reduce" if cell.reduction else "normal"
        weights = F.softmax(model.alphas(cell_type), dim=-1)
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for inputs in edge_inputs(cell.nodes):
            states.append(
                sum(
                    weights[offset + i, o] * op(states[state])
                    for i, state in enumerate(inputs)
                    for o, op in enumerate(cell.edges[offset + i].candidates)
                    if o != OP["none"]
                )
            )
            offset += len(inputs)
        s0, s1 = s1, torch.cat(states[-cell.nodes :], dim=1)
    return model.classifier(model.global_pooling(s1).flatten(1))


@pytest.mark.parametrize("pool_bn", [True, False])
def test_shared_relus_pools_and_kernels_compute_what_darts_computes(pool_bn):
    model = make_supernet(affine=not pool_bn, pool_bn=pool_bn)
    spread_alphas(model)
    reference_model = copy.deepcopy(model)
    images, labels = make_batch(6)
    F.cross_entropy(model(images), labels).backward()
    logits = _reference_forward(reference_model, images)
    F.cross_entropy(logits, labels).backward()
    assert torch.allclose(model(images), _reference_forward(reference_model, images), atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), reference_model.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    for b, c in zip(model.buffers(), reference_model.buffers(), strict=True):
        assert torch.allclose(b.float(), c.float(), atol=1e-6)  # batch-norm running statistics


def test_a_cell_pools_each_state_once_per_stride():
    model = make_supernet()
    pool_calls = []
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d):
            module.register_forward_hook(lambda m, *_: pool_calls.append(m.stride))
    model(make_batch(4)[0])
    # States 0..4 feed edges (the last node feeds none). A reduce cell reads states 0 and 1
    # with stride 2 and the rest with stride 1: still one pool per state.
    assert len(pool_calls) == 5 * len(model.cells)
    assert pool_calls.count(2) == 2 * sum(cell.reduction for cell in model.cells)


@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "dilation"),
    [(4, 3, 1, 2), (4, 5, 2, 2), (8, 3, 1, 1), (64, 3, 1, 2)],
)
def test_depthwise_conv_is_the_modules_convolution(channels, kernel, stride, dilation):
    torch.manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    conv = nn.Conv2d(channels, channels, kernel, stride, padding, dilation, channels, bias=False)
    x = torch.randn(3, channels, 8, 8, requires_grad=True)
    fast = depthwise_conv(conv, x)
    (fast_x, fast_w) = torch.autograd.grad(fast.square().sum(), (x, conv.weight))
    slow = conv(x)
    (slow_x, slow_w) = torch.autograd.grad(slow.square().sum(), (x, conv.weight))
    assert fast.shape == slow.shape
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(fast_x, slow_x, atol=1e-4) and torch.allclose(fast_w, slow_w, atol=1e-4)


@pytest.mark.parametrize(
    ("c_in", "c_out", "contiguous"), [(4, 4, True), (12, 8, True), (4, 4, False), (32, 32, True)]
)
def test_pointwise_conv_is_the_modules_convolution(c_in, c_out, contiguous):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    x = torch.randn(3, c_in, 4, 4)
    if not contiguous:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    fast = pointwise_conv(conv, x)
    (fast_x, fast_w) = torch.autograd.grad(fast.square().sum(), (x, conv.weight))
    slow = conv(x)
    (slow_x, slow_w) = torch.autograd.grad(slow.square().sum(), (x, conv.weight))
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(fast_x, slow_x, atol=1e-4) and torch.allclose(fast_w, slow_w, atol=1e-4)


def test_pruned_ops_are_not_executed_and_change_the_output():
    model = make_supernet()
    images, _ = make_batch(6)
    reference = model(images)
    calls = _record_candidate_calls(model)
    model(images)
    # Unpruned: every candidate except `none` runs.
    assert {o for _, _, o in calls} == set(range(N_OPS)) - {OP["none"]}

    with torch.no_grad():
        for mask in (model.mask_normal, model.mask_reduce):
            mask.zero_()
            mask[:, OP["skip_connect"]] = 1
    calls.clear()
    pruned = model(images)
    assert pruned.shape == (6, 10) and torch.isfinite(pruned).all()
    assert {o for _, _, o in calls} == {OP["skip_connect"]}
    assert len(calls) == len(model.cells) * N_EDGES
    assert not torch.allclose(pruned, reference, atol=1e-4)


def test_a_fully_pruned_edge_becomes_none():
    model = make_supernet()
    images, _ = make_batch(6)
    reference = model(images)
    calls = _record_candidate_calls(model)
    with torch.no_grad():
        model.mask_normal[0].zero_()  # edge 0 of the normal cell (cell 0 is normal)
        model.mask_reduce[13].zero_()  # the last edge of the reduce cells
    out = model(images)
    assert out.shape == (6, 10) and torch.isfinite(out).all()
    assert not torch.allclose(out, reference, atol=1e-4)
    assert [(c, o) for c, e, o in calls if e == 0 and c == 0] == [(0, OP["none"])]
    assert {o for c, e, o in calls if e == 13 and c > 0} == {OP["none"]}
    # Other edges are untouched.
    assert {o for c, e, o in calls if e == 1 and c == 0} == set(range(1, N_OPS))


def test_node_with_every_input_edge_pruned_still_runs():
    model = make_supernet()
    with torch.no_grad():
        model.mask_normal[0:2].zero_()  # both edges into node 2
        model.mask_reduce.zero_()  # every edge of the reduce cells
    out = model(make_batch(4)[0])
    assert out.shape == (4, 10) and torch.isfinite(out).all()


# ---------------------------------------------------------------- discretizer


def _group(
    scores: list[list[float]], cell_type: str = "normal", node: int | None = None
) -> UnitGroup:
    t = torch.tensor(scores)
    node = t.shape[0] if node is None else node
    return UnitGroup(
        key=f"{cell_type}/node{node}",
        granularity="operation",
        scores=t,
        mask=torch.ones_like(t),
        labels=PRIMITIVES,
        meta={"cell_type": cell_type, "node": node, "inputs": list(range(node))},
    )


def _row(**weights: float) -> list[float]:
    row = [0.01] * N_OPS
    for name, value in weights.items():
        row[OP[name]] = value
    return row


def _kept(keep: torch.Tensor) -> list[tuple[int, str]]:
    return [(edge, PRIMITIVES[op]) for edge, op in keep.nonzero().tolist()]


def test_top2_picks_two_strongest_non_none_edges_and_their_argmax_ops():
    group = _group(
        [
            _row(none=0.9, sep_conv_3x3=0.05),  # `none` is the largest score overall
            _row(max_pool_3x3=0.3, avg_pool_3x3=0.25),
            _row(dil_conv_5x5=0.2, skip_connect=0.1),
        ]
    )
    keep = darts_top2().discretize(group, {})
    assert keep.dtype == torch.bool and keep.shape == group.scores.shape
    assert _kept(keep) == [(1, "max_pool_3x3"), (2, "dil_conv_5x5")]


def test_top2_never_chooses_none():
    # Edge 0 would win on `none` alone; its best real op is still weaker than edge 1's.
    group = _group([_row(none=0.99), _row(sep_conv_5x5=0.02)])
    keep = darts_top2().discretize(group, {})
    assert keep.sum() == 2
    assert not keep[:, OP["none"]].any()
    assert _kept(keep) == [(0, PRIMITIVES[1]), (1, "sep_conv_5x5")]


def test_top2_respects_the_committed_mask():
    group = _group(
        [
            _row(sep_conv_3x3=0.05),
            _row(max_pool_3x3=0.3, avg_pool_3x3=0.25),
            _row(dil_conv_5x5=0.2),
        ]
    )
    top2 = darts_top2()
    group.mask[1, OP["max_pool_3x3"]] = 0
    assert _kept(top2.discretize(group, {})) == [(1, "avg_pool_3x3"), (2, "dil_conv_5x5")]
    group.mask[1] = 0  # the whole edge
    assert _kept(top2.discretize(group, {})) == [(0, "sep_conv_3x3"), (2, "dil_conv_5x5")]
    # Only one edge left with a real op: only one is kept, and never a masked op.
    group.mask[2] = 0
    group.mask[0, OP["sep_conv_3x3"]] = 0
    keep = top2.discretize(group, {})
    assert keep.sum() == 1
    assert not (keep & (group.mask == 0)).any()
    assert _kept(keep)[0][0] == 0


def test_top_edges_discretizer_edges_and_exclusions_are_configurable():
    group = _group([_row(none=0.9, skip_connect=0.5), _row(skip_connect=0.6), _row(none=0.8)])
    one = TopEdgesDiscretizer("top1", "", exclude=("none", "skip_connect"), edges=1)
    keep = one.discretize(group, {})
    assert keep.sum() == 1
    assert not keep[:, [OP["none"], OP["skip_connect"]]].any()


# ------------------------------------------------------------------- genotype


def _cell_groups(cell_type: str, choices: list[dict[int, str]]) -> list[UnitGroup]:
    """One group per node; ``choices[i]`` maps edge -> op that gets a strong score."""
    groups = []
    for node_index, strong in enumerate(choices):
        node = node_index + 2
        rows = []
        for edge in range(node):
            row = _row(none=0.5)
            if edge in strong:
                row[OP[strong[edge]]] = 0.4 - 0.01 * edge
            rows.append(row)
        groups.append(_group(rows, cell_type, node))
    return groups


def test_genotype_from_groups_gives_the_expected_genotype():
    groups = _cell_groups(
        "normal",
        [
            {0: "sep_conv_3x3", 1: "sep_conv_5x5"},
            {0: "skip_connect", 2: "dil_conv_3x3"},
            {1: "sep_conv_3x3", 3: "avg_pool_3x3"},
            {2: "dil_conv_5x5", 4: "max_pool_3x3"},
        ],
    ) + _cell_groups(
        "reduce",
        [
            {0: "max_pool_3x3", 1: "max_pool_3x3"},
            {1: "skip_connect", 2: "avg_pool_3x3"},
            {0: "sep_conv_5x5", 2: "sep_conv_3x3"},
            {3: "dil_conv_3x3", 4: "skip_connect"},
        ],
    )
    top2 = darts_top2()
    genotype = genotype_from_groups(groups, lambda g: top2.discretize(g, {}))
    # Within a node the two entries come in input order.
    assert genotype == Genotype(
        normal=(
            ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 1),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 3),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 4),
        ),
        normal_concat=(2, 3, 4, 5),
        reduce=(
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 1),
            ("avg_pool_3x3", 2),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 2),
            ("dil_conv_3x3", 3),
            ("skip_connect", 4),
        ),
        reduce_concat=(2, 3, 4, 5),
    )
    payload = genotype.to_json()
    validate_genotype_json(payload)
    assert Genotype.from_json(payload) == genotype
    assert payload["normal"][:2] == [["sep_conv_3x3", 0], ["sep_conv_5x5", 1]]


def test_genotype_from_a_supernet_validates(registry):
    model = make_supernet()
    spread_alphas(model)
    top2 = darts_top2()
    genotype = genotype_from_groups(
        model.unit_groups("operation"), lambda g: top2.discretize(g, {})
    )
    payload = genotype.to_json()
    registry.get("architecture_format", "darts-genotype").validate(payload)
    assert len(genotype.normal) == len(genotype.reduce) == 8
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)


# ------------------------------------------------------------------ architect


def _smooth(model: DartsSupernet) -> DartsSupernet:
    """Make the supernet twice differentiable everywhere, in float64.

    DARTS's Hessian-vector product is a central difference with a fixed step of
    norm 0.01 in weight space. In a supernet this small that step crosses ReLU and
    max-pool kinks, where the weight gradient jumps, so the difference does not
    approximate the Hessian (measured: 5-7x off in relative norm for the plain
    tiny supernet, while a 1e-6 step agrees with double backward to 1e-9). With
    softplus for ReLU and max pool pruned (it has no weights) the loss is smooth
    and the difference agrees with the exact product to about 1e-4.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus())
    with torch.no_grad():
        model.mask_normal[:, OP["max_pool_3x3"]] = 0
        model.mask_reduce[:, OP["max_pool_3x3"]] = 0
    return model.double().train()


def _exact_unrolled_grad(model, train, valid, eta, optimizer):
    """d/d alpha of L_val(w - eta * (grad_w L_train(w, alpha) + wd w + m buf), alpha).

    Computed by double backward: the exact DARTS second-order gradient
    grad_alpha L_val(w') - eta * (d2 L_train / d alpha d w) grad_w' L_val(w').
    Also returns the direct term grad_alpha L_val(w') alone.
    """
    weights, alphas = model.weight_parameters(), model.arch_parameters()
    names = {id(p): n for n, p in model.named_parameters()}
    group = optimizer.param_groups[0]
    momentum, decay = group["momentum"], group["weight_decay"]
    loss = F.cross_entropy(model(train[0]), train[1])
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    unrolled = {}
    for w, g in zip(weights, grads, strict=True):
        buf = optimizer.state.get(w, {}).get("momentum_buffer")
        step = g + decay * w.detach() + (momentum * buf if buf is not None else 0)
        unrolled[names[id(w)]] = w.detach() - eta * step
    val = F.cross_entropy(functional_call(model, unrolled, (valid[0],)), valid[1])
    total = torch.autograd.grad(val, alphas)
    fixed = {name: u.detach() for name, u in unrolled.items()}
    val = F.cross_entropy(functional_call(model, fixed, (valid[0],)), valid[1])
    direct = torch.autograd.grad(val, alphas)
    return flat(total), flat(direct)


@pytest.mark.parametrize(
    ("momentum_buffers", "weight_decay"),
    [(False, 0.0), (True, 0.1)],
    ids=["plain-sgd", "momentum-and-decay"],
)
def test_second_order_gradient_matches_double_backward(momentum_buffers, weight_decay):
    model = _smooth(make_supernet())
    spread_alphas(model)
    train = make_batch(8, seed=1, dtype=torch.float64)
    valid = make_batch(8, seed=2, dtype=torch.float64)
    optimizer = sgd(model, momentum=0.9, weight_decay=weight_decay)
    if momentum_buffers:  # one real weight step fills the buffers
        F.cross_entropy(model(train[0]), train[1]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert all("momentum_buffer" in optimizer.state[w] for w in model.weight_parameters())
    eta = 0.5
    exact, direct = _exact_unrolled_grad(model, train, valid, eta, optimizer)

    architect = Architect(model, ARCH_OPTIONS, second_order=True)
    architect.step(train, valid, eta, optimizer)
    got = flat(a.grad for a in model.arch_parameters())

    # The implicit term is a sizeable part of the gradient, so the check can tell.
    assert (exact - direct).norm() > 0.2 * exact.norm()
    assert (got - exact).norm() <= 1e-3 * exact.norm()
    # The finite-difference part alone, against the exact Hessian-vector product.
    assert ((got - direct) - (exact - direct)).norm() <= 1e-2 * (exact - direct).norm()


def test_second_order_differs_from_first_order_on_the_plain_supernet():
    train, valid = make_batch(8, seed=1), make_batch(8, seed=2)
    grads = {}
    for second_order in (False, True):
        model = make_supernet()
        spread_alphas(model)
        architect = Architect(model, ARCH_OPTIONS, second_order=second_order)
        architect.step(train, valid, 0.1, sgd(model))
        grads[second_order] = flat(a.grad for a in model.arch_parameters())
        assert torch.isfinite(grads[second_order]).all()

    # First order is exactly grad_alpha L_val at the current weights.
    model = make_supernet()
    spread_alphas(model)
    loss = F.cross_entropy(model(valid[0]), valid[1])
    torch.testing.assert_close(
        grads[False], flat(torch.autograd.grad(loss, model.arch_parameters()))
    )
    assert (grads[True] - grads[False]).norm() > 1e-3 * grads[False].norm()


@pytest.mark.parametrize("second_order", [False, True], ids=["first", "second"])
def test_architect_step_leaves_weights_unchanged_and_moves_alphas(second_order):
    model = make_supernet()
    spread_alphas(model)
    optimizer = sgd(model, weight_decay=3e-4)
    train, valid = make_batch(8, seed=1), make_batch(8, seed=2)
    # Momentum buffers present, as after the first real step.
    F.cross_entropy(model(train[0]), train[1]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    weights_before = [w.detach().clone() for w in model.weight_parameters()]
    alphas_before = [a.detach().clone() for a in model.arch_parameters()]
    state_before = copy.deepcopy(optimizer.state_dict())
    architect = Architect(model, ARCH_OPTIONS, second_order=second_order)
    logits = architect.step(train, valid, 0.025, optimizer)

    assert logits.shape == (8, 10) and not logits.requires_grad
    for before, after in zip(weights_before, model.weight_parameters(), strict=True):
        torch.testing.assert_close(after.detach(), before, atol=1e-6, rtol=0)
        assert after.grad is None
    for before, after in zip(alphas_before, model.arch_parameters(), strict=True):
        assert not torch.equal(after.detach(), before)
    # The weight optimizer's momentum buffers are read, never written.
    state_after = optimizer.state_dict()["state"]
    for key, state in state_before["state"].items():
        assert torch.equal(state["momentum_buffer"], state_after[key]["momentum_buffer"])


@pytest.mark.parametrize("cells", [1, 2])
def test_architect_step_on_supernets_lacking_a_cell_type(cells):
    model = make_supernet(cells=cells)
    Architect(model, ARCH_OPTIONS, second_order=False).step(
        make_batch(8, seed=1), make_batch(8, seed=2), 0.025, sgd(model)
    )
    assert all(a.grad is None or torch.isfinite(a.grad).all() for a in model.arch_parameters())


def test_second_order_step_on_a_pruned_supernet():
    model = make_supernet()
    with torch.no_grad():
        model.mask_normal[:, OP["sep_conv_5x5"]] = 0
    architect = Architect(model, ARCH_OPTIONS, second_order=True)
    architect.step(make_batch(8, seed=1), make_batch(8, seed=2), 0.025, sgd(model))
    assert torch.isfinite(flat(a.grad for a in model.arch_parameters())).all()


# ----------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def digits(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    return registry.get("dataset", "digits").load(DataRequest(root=root))


class _Recorder:
    def __init__(self):
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.stages: list[tuple[Any, ...]] = []
        self.alphas: dict[str, torch.Tensor] = {}

    def epoch_ended(self, epoch, metrics, **_):
        self.epochs.append((epoch, dict(metrics)))

    def stage_ended(self, *args, **_):
        self.stages.append(args)


class _AlphaLog(logging.Handler):
    """Keeps the alpha tensors that Darts.search logs at the end."""

    def __init__(self, recorder: _Recorder):
        super().__init__(logging.DEBUG)
        self.recorder = recorder

    def emit(self, record):
        message = str(record.msg)
        for cell_type in ("normal", "reduce"):
            if message.startswith(f"alphas {cell_type}"):
                self.recorder.alphas[cell_type] = record.args[0].detach().clone()


def _context(
    bundle,
    tmp_path: Path,
    seed: int,
    components: ComponentLookup,
    recorder: _Recorder,
    options: Mapping[str, Any],
    cells: int = 3,
    epochs: int = 1,
    steps: int = 2,
) -> SearchContext:
    budget = SearchBudget(
        epochs=epochs, batch_size=32, cells=cells, channels=4, max_steps_per_epoch=steps
    )
    log = logging.getLogger(f"test_darts_search.{tmp_path.name}.{seed}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.handlers = [_AlphaLog(recorder)]
    return SearchContext(
        method="darts",
        options=options,
        budget=budget,
        data=search_data(bundle, 0.5, 0, budget.batch_size, seed),
        device=CPU,
        seed=seed,
        run_dir=tmp_path,
        log=log,
        components=components,
        epoch_ended=recorder.epoch_ended,
        stage_ended=recorder.stage_ended,
    )


def _search(bundle, tmp_path, registry, seed, epochs=1, cells=3, steps=2):
    method = Darts("darts", second_order=False)
    recorder = _Recorder()
    options = method.default_options()
    ctx = _context(bundle, tmp_path, seed, registry, recorder, options, cells, epochs, steps)
    torch.manual_seed(seed)  # as the runner does before a search
    return method.search(ctx), recorder


def test_darts_search_end_to_end_is_deterministic(digits, registry, tmp_path):
    # Two epochs of one step each: as cheap as one epoch of two, and shows the epoch count.
    result, recorder = _search(digits, tmp_path, registry, seed=3, epochs=2, steps=1)
    arch = result.architecture
    assert isinstance(arch, Architecture) and arch.format == "darts-genotype"
    registry.get("architecture_format", "darts-genotype").validate(arch.payload)
    genotype = Genotype.from_json(arch.payload)
    assert len(genotype.normal) == len(genotype.reduce) == 8
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)

    assert [epoch for epoch, _ in recorder.epochs] == [1, 2]
    for _, metrics in recorder.epochs:
        assert set(metrics) >= {"train_loss", "train_accuracy", "valid_accuracy"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["train_loss"] > 0
        assert 0 <= metrics["train_accuracy"] <= 1 and 0 <= metrics["valid_accuracy"] <= 1
    assert result.metrics == recorder.epochs[-1][1]
    assert recorder.stages == []  # DARTS is a single stage

    assert set(recorder.alphas) == {"normal", "reduce"}
    for alphas in recorder.alphas.values():
        assert alphas.shape == (N_EDGES, N_OPS)
        torch.testing.assert_close(alphas.sum(dim=1), torch.ones(N_EDGES))

    again, recorder_again = _search(digits, tmp_path, registry, seed=3, epochs=2, steps=1)
    assert again.architecture.payload == arch.payload
    assert again.metrics == result.metrics
    for cell_type in ("normal", "reduce"):
        assert torch.equal(recorder_again.alphas[cell_type], recorder.alphas[cell_type])

    _, other = _search(digits, tmp_path, registry, seed=4, epochs=2, steps=1)
    for cell_type in ("normal", "reduce"):
        assert not torch.allclose(other.alphas[cell_type], recorder.alphas[cell_type])


def test_darts_search_with_two_cells(digits, registry, tmp_path):
    result, recorder = _search(digits, tmp_path, registry, seed=0, cells=2)
    validate_genotype_json(result.architecture.payload)
    assert len(recorder.epochs) == 1


class _FilterDiscretizer(Discretizer):
    name = "filter-top"
    description = "decides filter units"
    granularity = "filter"

    def discretize(self, group, options):
        return torch.ones_like(group.scores, dtype=torch.bool)


class _WithExtra(ComponentLookup):
    def __init__(self, base: ComponentLookup, kind: str, component: Any):
        self.base, self.kind, self.component = base, kind, component

    def get(self, kind: str, name: str) -> Any:
        if kind == self.kind and name == self.component.name:
            return self.component
        return self.base.get(kind, name)

    def names(self, kind: str) -> list[str]:
        extra = [self.component.name] if kind == self.kind else []
        return sorted([*self.base.names(kind), *extra])


def test_discretizer_of_another_granularity_is_refused(digits, registry, tmp_path):
    method = Darts("darts", second_order=False)
    options = {**method.default_options(), "discretizer": "filter-top"}
    components = _WithExtra(registry, "discretizer", _FilterDiscretizer())
    assert components.get("discretizer", "darts-top2") is registry.get("discretizer", "darts-top2")
    recorder = _Recorder()
    ctx = _context(digits, tmp_path, 0, components, recorder, options)
    with pytest.raises(ValueError) as info:
        method.search(ctx)
    message = str(info.value)
    assert "filter-top" in message and "'filter'" in message and "'operation'" in message
    assert recorder.epochs == []


# --------------------------------------------------------------------- pruner


def _never(_group):
    raise AssertionError("FixedRatioPruner must not consult the discretizer")


def test_fixed_ratio_pruner_keeps_the_top_scores_per_group():
    model = make_supernet()
    spread_alphas(model, std=2.0)
    groups = model.unit_groups("operation")
    scores = [g.scores.detach().clone() for g in groups]
    report = FixedRatioPruner().prune(groups, _never, {"retention": 0.5})

    sizes = [g.mask.numel() for g in groups]
    assert sizes == [16, 24, 32, 40] * 2
    kept = [math.ceil(0.5 * n) for n in sizes]
    assert report.total == sum(sizes) == 224
    assert report.alive == sum(kept) == 112
    assert report.pruned == report.total - report.alive
    assert model.mask_normal.sum() + model.mask_reduce.sum() == report.alive
    for group, score, k in zip(groups, scores, kept, strict=True):
        assert int(group.mask.sum()) == k
        expected = torch.zeros(score.numel())
        expected[score.flatten().topk(k).indices] = 1
        assert torch.equal(group.mask.flatten(), expected)
        # Every kept unit scores at least as high as every pruned one.
        assert score[group.mask == 1].min() >= score[group.mask == 0].max()


def test_fixed_ratio_pruner_repeats_and_tightens_without_reviving():
    model = make_supernet()
    spread_alphas(model, std=2.0)
    pruner = FixedRatioPruner()
    pruner.prune(model.unit_groups("operation"), _never, {"retention": 0.5})
    first = (model.mask_normal.clone(), model.mask_reduce.clone())

    # The same ratio again, even after the scores moved, prunes nothing more.
    spread_alphas(model, seed=7, std=2.0)
    again = pruner.prune(model.unit_groups("operation"), _never, {"retention": 0.5})
    assert (again.pruned, again.alive, again.total) == (0, 112, 224)
    assert torch.equal(model.mask_normal, first[0]) and torch.equal(model.mask_reduce, first[1])

    # A higher ratio never revives a pruned unit.
    wider = pruner.prune(model.unit_groups("operation"), _never, {"retention": 1.0})
    assert (wider.pruned, wider.alive) == (0, 112)

    # A lower ratio counts against the whole group and keeps a subset of the survivors.
    groups = model.unit_groups("operation")
    tighter = pruner.prune(groups, _never, {"retention": 0.25})
    kept = [math.ceil(0.25 * g.mask.numel()) for g in groups]
    assert [int(g.mask.sum()) for g in groups] == kept
    assert tighter.alive == sum(kept) == 56 and tighter.pruned == 112 - 56
    assert not ((model.mask_normal == 1) & (first[0] == 0)).any()
    assert not ((model.mask_reduce == 1) & (first[1] == 0)).any()


def test_fixed_ratio_pruner_never_empties_a_group_and_defaults_to_half():
    model = make_supernet()
    spread_alphas(model)
    report = FixedRatioPruner().prune(model.unit_groups("operation"), _never, {"retention": 1e-9})
    assert report.alive == 8
    assert all(int(g.mask.sum()) == 1 for g in model.unit_groups("operation"))

    model = make_supernet()
    report = FixedRatioPruner().prune(model.unit_groups("operation"), _never, {})
    assert (report.pruned, report.alive, report.total) == (112, 112, 224)


@pytest.mark.parametrize("retention", [0.0, -0.5, 1.01, 2])
def test_fixed_ratio_pruner_rejects_bad_retention(retention):
    model = make_supernet()
    with pytest.raises(ValueError, match="retention"):
        FixedRatioPruner().prune(model.unit_groups("operation"), _never, {"retention": retention})
    assert (model.mask_normal == 1).all() and (model.mask_reduce == 1).all()
