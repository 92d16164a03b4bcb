"""Physical channel shrinking of the MG-DARTS supernet (ALGORITHM.md D.5, J.5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgas_bench.components import SupernetSpec
from plugins.mgdarts.eval_ops import FactorizedReduce
from plugins.mgdarts.heads import StageHead
from plugins.mgdarts.search_ops import (
    PRIMITIVES,
    DilConv,
    FilterGate,
    Identity,
    Pool,
    SepConv,
    SkipReduce,
)
from plugins.mgdarts.shrink import ShrinkReport, state_widths, target_width
from plugins.mgdarts.supernet import MGCell, MGSupernet

SPEC = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=6, channels=4)
SKIP, SEP3, SEP5, DIL3, DIL5, AVG, MAX = range(len(PRIMITIVES))
assert PRIMITIVES[SEP3] == "sep_conv_3x3" and PRIMITIVES[DIL5] == "dil_conv_5x5"

# Slots gated off everywhere in the alignment test. In cells whose outputs (or whose
# reduction skips) go through a FactorizedReduce, the kept slots split evenly between
# its two halves, where slicing it is exact.
DEAD_SLOTS = {0: [1, 2], 1: [1, 2], 2: [3, 7], 3: [3, 7], 4: [6, 7, 14, 15], 5: [6, 7, 14, 15]}
# Ops committed off in the alignment test: (cell, edge, op); every node keeps others.
DEAD_OPS = [(0, 0, SEP3), (0, 3, DIL5), (1, 9, SKIP), (2, 1, SKIP), (2, 0, SEP5), (4, 6, SEP3)]


def make_net(seed: int = 0) -> MGSupernet:
    torch.manual_seed(seed)
    return MGSupernet(SPEC)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 8, 8, generator=generator)
    return x, torch.randint(0, 10, (4,), generator=generator)


def out_gates(cell: MGCell) -> list[FilterGate]:
    """Every gate on a cell's slots: both preprocess gates and every op's ``gate_out``."""
    gates = [cell.preprocess0.gate, cell.preprocess1.gate]
    for mixed in cell.edges:
        gates.extend(op.gate_out for op in mixed.ops if hasattr(op, "gate_out"))
    return gates


def assert_uniform(net: MGSupernet, index: int, width: int) -> None:
    """Every module of cell ``index`` reads and writes ``width`` channels per state."""
    cell = net.cells[index]
    assert width == cell.C
    assert net.cell_out_channels(index) == 4 * width
    for pre in (cell.preprocess0, cell.preprocess1):
        assert pre.gate.beta.numel() == pre.gate.filter_mask.numel() == width
        assert pre.op.bn.num_features == width
    for mixed in cell.edges:
        for op in mixed.ops:
            channels = op.channels(width)
            assert channels[0] == channels[-1] == width
            if isinstance(op, SepConv):
                mid = channels[1]
                assert width <= mid
                assert op.dw1.weight.shape[0] == op.pw1.in_channels == width
                assert op.pw1.weight.shape == op.pw1.weight_mask.shape == (mid, width, 1, 1)
                assert (
                    op.dw2.weight.shape == op.dw2.weight_mask.shape == (mid, 1, *op.dw2.kernel_size)
                )
                assert op.bn1.num_features == op.gate_mid.beta.numel() == mid
                assert op.pw2.weight.shape == (width, mid, 1, 1)
                assert op.bn2.num_features == op.gate_out.beta.numel() == width
            elif isinstance(op, DilConv):
                assert op.dw.weight.shape[0] == width
                assert op.pw.weight.shape == op.pw.weight_mask.shape == (width, width, 1, 1)
                assert op.bn.num_features == op.gate_out.beta.numel() == width
            elif isinstance(op, SkipReduce):
                assert op.reduce.conv_1.weight.shape == (width // 2, width, 1, 1)
                assert op.reduce.conv_2.weight.shape == (width // 2, width, 1, 1)
                assert op.reduce.bn.num_features == op.gate_out.beta.numel() == width
            for gate in op.filter_gates().values():
                assert gate.filter_mask.all()


def stage_outputs(net: MGSupernet, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """``net(x, upto=end)`` for every stage end, and the logits, from one full forward.

    Hooks catch each stage end cell's output during ``forward_logits``, which is what
    ``forward(x, upto=end)`` returns (checked for the first stage in
    :func:`train_step_everywhere`); one pass instead of four keeps the tests fast.
    """
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        net.cells[end].register_forward_hook(
            lambda _m, _i, out, end=end: outputs.__setitem__(end, out)
        )
        for end in net.stage_ends(3)
    ]
    try:
        logits = net.forward_logits(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, logits


def train_step_everywhere(net: MGSupernet, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward + backward through a head built now at every stage end, and the full net."""
    net.zero_grad(set_to_none=True)
    ends = net.stage_ends(3)
    heads = {end: StageHead(net.cell_out_channels(end), 10, net.cell_out_size(end)) for end in ends}
    features, logits = stage_outputs(net, x)
    losses = [F.cross_entropy(heads[end](features[end]), y) for end in ends]
    losses.append(F.cross_entropy(logits, y))
    torch.stack(losses).sum().backward()
    assert all(torch.isfinite(loss) for loss in losses)
    for end in ends:
        assert heads[end].features[2].weight.grad is not None
    with torch.no_grad():
        assert torch.equal(net(x, upto=ends[0]), features[ends[0]])
    # Committed-dead ops do not run, so only the alive modules' weights get gradient.
    grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
    assert len(grads) > 100 and all(torch.isfinite(g).all() for g in grads)
    assert net.classifier.weight.grad is not None


# ------------------------------------------------------------------ channels()


def test_search_op_channels_give_the_genotype_lists():
    net = make_net()
    cell = net.cells[2]  # a reduction cell of width 8
    assert cell.op(0, SEP3).channels(8) == [8, 8, 8]
    assert cell.op(0, DIL5).channels(123) == [8, 8]  # conv ops ignore the cell width
    assert isinstance(cell.op(0, SKIP), SkipReduce) and cell.op(0, SKIP).channels(8) == [8]
    # Edge 4 (node 3 <- node 2) is a stride-1 edge of the reduction cell.
    assert isinstance(cell.op(4, SKIP), Identity) and cell.op(4, SKIP).channels(6) == [6]
    assert isinstance(cell.op(4, AVG), Pool) and cell.op(4, AVG).channels(6) == [6]
    assert SepConv(6, 10, 6, 3, 1).channels(0) == [6, 10, 6]
    assert cell.op_channels(4, MAX) == [8] and cell.op_channels(1, SEP5) == [8, 8, 8]


# -------------------------------------------------------------------- planning


def test_target_width_follows_the_mean_max_and_half_rules():
    net = make_net()
    cell = net.cells[4]  # width 16, built at 16: half is 8

    def alive(gate: FilterGate, n: int) -> None:
        gate.filter_mask.zero_()
        gate.filter_mask[:n] = 1

    with torch.no_grad():
        for gate in out_gates(cell):
            alive(gate, 2)
    assert state_widths(cell) == [2] * 6
    assert target_width(net, 4) == 8  # mean 2 and max 2 are both below half

    with torch.no_grad():
        for edge in range(9, 14):  # node 5
            alive(cell.op(edge, DIL3).gate_out, 9)  # odd counts round up to even
    assert state_widths(cell) == [2, 2, 2, 2, 2, 10]
    assert target_width(net, 4) == 10  # mean int(20 / 6) -> 4 is below half; max is not

    with torch.no_grad():
        alive(cell.preprocess0.gate, 16)
        alive(cell.preprocess1.gate, 13)
    assert state_widths(cell) == [16, 14, 2, 2, 2, 10]
    assert target_width(net, 4) == 8  # mean int(46 / 6) = 7 -> 8 reaches half

    # A node without alive sep/dil ops inherits the previous state's width.
    for edge in range(2, 5):  # node 3
        for op in (SEP3, SEP5, DIL3, DIL5):
            net.set_op_alive(4, edge, op, False)
    with torch.no_grad():
        alive(cell.op(0, SEP5).gate_out, 1)
    assert state_widths(cell) == [16, 14, 2, 2, 2, 10]
    with torch.no_grad():
        alive(cell.op(1, SEP5).gate_out, 6)
    assert state_widths(cell) == [16, 14, 6, 6, 2, 10]
    # The width never exceeds the cell's current one, and full masks keep it.
    assert target_width(make_net(), 0) == 4


# ------------------------------------------------------------------ alignment


def _zero_gate_dead_slots(net: MGSupernet) -> dict[tuple[int, int, int], int]:
    """Gate DEAD_SLOTS off in every gate; return the expected middle width of each SepConv."""
    mids = {}
    with torch.no_grad():
        for beta in net.beta_parameters():
            beta.normal_()
        for i, cell in enumerate(net.cells):
            dead = DEAD_SLOTS[i]
            for gate in out_gates(cell):
                gate.filter_mask[dead] = 0
            for edge, mixed in enumerate(cell.edges):
                for index in (SEP3, SEP5):
                    op = mixed.ops[index]
                    # Half the separable convs lose exactly the dead slots' count in the
                    # middle (middle width = cell width), half keep all (stays C).
                    if edge % 2:
                        op.gate_mid.filter_mask[dead] = 0
                        mids[i, edge, index] = cell.C - len(dead)
                    else:
                        mids[i, edge, index] = cell.C
        for cell, edge, op in DEAD_OPS:
            net.set_op_alive(cell, edge, op, False)
    return mids


def test_shrinking_zero_gated_slots_keeps_the_function_stage_by_stage():
    net = make_net()
    mids = _zero_gate_dead_slots(net)
    x, y = batch()
    net.train()
    with torch.no_grad():  # give the batch norms running statistics worth copying
        net.forward_logits(torch.randn(8, 1, 8, 8))
    net.eval()
    with torch.no_grad():
        stage_features, expected = stage_outputs(net, x)
    old_bns = {
        "pre1": net.cells[3].preprocess1.op.bn,
        "pre0_fr": net.cells[3].preprocess0.op.bn,
        "sep_bn1": net.cells[4].op(5, SEP3).bn1,
        "sep_bn2": net.cells[4].op(5, SEP3).bn2,
        "dil": net.cells[2].op(0, DIL3).bn,
    }
    old_bns = {k: {n: t.clone() for n, t in bn.state_dict().items()} for k, bn in old_bns.items()}
    old_mid_mask = net.cells[4].op(5, SEP3).gate_mid.filter_mask.clone()
    alpha = [cell.alpha for cell in net.cells]
    t_wt = net.threshold_parameters("weight")
    widths = {i: cell.C - len(DEAD_SLOTS[i]) for i, cell in enumerate(net.cells)}

    reports = {}
    for end in net.stage_ends(3):
        planned = {i: target_width(net, i) for i in range(end + 1)}
        report = reports[end] = net.shrink(end)
        assert isinstance(report, ShrinkReport)
        assert planned == {i: widths[i] for i in range(end + 1)}
        assert {i: new for i, (_, new) in report.widths().items()} == planned
        assert report.params_after < report.params_before
        for i in range(end + 1):
            assert_uniform(net, i, widths[i])
        net.eval()
        with torch.no_grad():
            # The not-yet-shrunk cells end+1, end+2 had their input side sliced.
            features, logits = stage_outputs(net, x)
            assert torch.allclose(logits, expected, atol=1e-5)
            kept = report.cells[end].output_columns
            assert torch.allclose(features[end], stage_features[end][:, kept], atol=1e-5)

    first = reports[1].cells[0]
    assert (first.old_width, first.new_width) == (4, 2) and first.slots == (0, 3)
    assert reports[5].cells[0].slots == (0, 1)  # already uniform: nothing more to drop
    assert reports[3].cells[2].slots == (0, 1, 2, 4, 5, 6)
    assert reports[3].cells[2].output_columns[:7] == (0, 1, 2, 4, 5, 6, 8)
    assert net.classifier.in_features == 4 * widths[5]
    assert [net.cell_out_channels(i) for i in range(6)] == [8, 8, 24, 24, 48, 48]
    for (i, edge, index), mid in mids.items():
        if net.op_alive(i, edge, index):
            assert net.cells[i].op(edge, index).channels(0) == [widths[i], mid, widths[i]]
    # alpha and thresholds keep their identity; everything sliced keeps its state.
    assert all(a is cell.alpha for a, cell in zip(alpha, net.cells, strict=True))
    assert all(a is b for a, b in zip(t_wt, net.threshold_parameters("weight"), strict=True))
    s2, s3, s4 = (torch.tensor(reports[end].cells[i].slots) for i, end in ((2, 3), (3, 3), (4, 5)))
    mid = old_mid_mask.nonzero().flatten()
    new_bns = {
        "pre1": (net.cells[3].preprocess1.op.bn, s3),
        "pre0_fr": (net.cells[3].preprocess0.op.bn, s3),
        "sep_bn1": (net.cells[4].op(5, SEP3).bn1, mid),
        "sep_bn2": (net.cells[4].op(5, SEP3).bn2, s4),
        "dil": (net.cells[2].op(0, DIL3).bn, s2),
    }
    for key, (bn, rows) in new_bns.items():
        old = old_bns[key]
        assert int(bn.num_batches_tracked) == int(old["num_batches_tracked"]) == 1
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(bn, name).detach(), old[name][rows]), (key, name)
    assert isinstance(net.cells[3].preprocess0.op, FactorizedReduce)

    net.train()
    train_step_everywhere(net, x, y)


# --------------------------------------------------------- commits, regrowth


def test_shrink_after_commit_plans_uniform_cells_that_train():
    net = make_net()
    x, y = batch()
    with torch.no_grad():
        for cell in net.cells:
            cell.t_fil.fill_(0.1)
            cell.t_pre.fill_(0.1)
        # Cell 0: 3 of 4 slots pruned everywhere -> 2 (alive 1, rounded up to even).
        for gate in out_gates(net.cells[0]):
            gate.beta[1:] = -3.0
        # Cell 4: slots 0..5 pruned everywhere (the skips' gates have no threshold).
        for gate in out_gates(net.cells[4]):
            gate.beta[:6] = -3.0
        net.cells[4].alpha[:, SEP5] = -3.0
        net.cells[4].t_op.fill_(0.1)
    pruned = net.commit()
    assert pruned["operation"] == 14 and pruned["filter"] > 0
    assert [target_width(net, i) for i in range(6)] == [2, 4, 8, 8, 10, 16]
    before = sum(p.numel() for p in net.parameters())

    report = net.shrink(1)
    assert report.widths() == {0: (4, 2), 1: (4, 4)}
    assert report.params_before == before
    assert report.params_after == sum(p.numel() for p in net.parameters()) < before
    assert report.cells[0].params_after < report.cells[0].params_before
    assert_uniform(net, 0, 2)
    assert_uniform(net, 1, 4)
    assert net.cells[2].preprocess0.op.conv.in_channels == 8  # reads cell 0's 4 x 2
    assert net.cells[3].preprocess0.op.conv_1.in_channels == 16  # cell 1 kept its width
    train_step_everywhere(net, x, y)

    # Cell 5 keeps its width (16 >= half of 16): its modules stay, its masks reset (D.5).
    keeper = net.cells[5].op(7, DIL3)
    # Cell 0 keeps width 2, but a middle of 4 with 3 alive filters narrows to 3.
    narrowing = net.cells[0].op(1, SEP3)
    assert narrowing.channels(0) == [2, 4, 2]
    with torch.no_grad():
        keeper.gate_out.filter_mask[:3] = 0
        keeper.pw.weight_mask[0, 0] = 0
        narrowing.gate_mid.filter_mask[1] = 0
    report = net.shrink(5)
    assert report.widths() == {0: (2, 2), 1: (4, 4), 2: (8, 8), 3: (8, 8), 4: (16, 10), 5: (16, 16)}
    assert net.cells[5].op(7, DIL3) is keeper and keeper.gate_out.filter_mask.all()
    assert keeper.pw.weight_mask[0, 0] == 0  # weight masks are never reset
    narrowed = net.cells[0].op(1, SEP3)
    assert narrowed.channels(0) == [2, 3, 2] and narrowed.gate_mid.filter_mask.all()
    assert torch.equal(narrowed.pw1.weight, narrowing.pw1.weight[[0, 2, 3]])
    # ... but its preprocess1 reads the narrowed cell 4 (24 of its 64 columns dropped).
    assert net.cells[5].preprocess1.op.conv.in_channels == 40
    assert report.cells[5].params_before - report.cells[5].params_after == 24 * 16
    assert report.cells[4].slots == tuple(range(6, 16))
    for i, width in enumerate([2, 4, 8, 8, 10, 16]):
        assert_uniform(net, i, width)
    # Dead ops were rebuilt at the new width, fresh.
    dead = net.cells[4].op(3, SEP5)
    assert not net.op_alive(4, 3, SEP5) and dead.channels(0) == [10, 10, 10]
    assert (dead.gate_out.beta == 0).all()
    train_step_everywhere(net, x, y)


def test_regrown_dead_op_runs_at_the_shrunk_width():
    net = make_net()
    net.set_op_alive(2, 0, SEP3, False)
    net.set_op_alive(2, 1, SKIP, False)
    with torch.no_grad():
        for gate in out_gates(net.cells[2]):
            gate.filter_mask[[0, 4]] = 0
    assert net.shrink(3).widths()[2] == (8, 6)
    x, _ = batch()
    for op in (SEP3, SKIP):
        net.regrow(2, 0 if op == SEP3 else 1, op)
    sep, skip = net.cells[2].op(0, SEP3), net.cells[2].op(1, SKIP)
    assert sep.channels(0) == [6, 6, 6] and skip.channels(0) == [6]
    outputs = []
    for module in (sep, skip):
        module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    features = net(x, upto=2)
    assert features.shape == (4, 24, 4, 4)
    assert [o.shape for o in outputs] == [(4, 6, 4, 4)] * 2
    features.square().mean().backward()
    assert sep.pw2.weight.grad is not None and skip.reduce.conv_1.weight.grad is not None


def test_shrink_rejects_a_cell_out_of_range():
    net = make_net()
    for upto in (6, -1):
        with pytest.raises(IndexError):
            net.shrink(upto)
