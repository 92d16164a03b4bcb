"""Physical channel shrinking of the MG-DARTS supernet (ALGORITHM.md D.5, ``prune_kernel``).

:func:`shrink` narrows cells ``0..upto`` to one width each, by building new, narrower
modules and copying sliced weights into them. The widths follow D.5 steps 1-3: the six
states of a cell (the two preprocess outputs and nodes 2..5) get widths from their
alive filters, the cell is made uniform (mean, else max, else half the construction
width), and a separable conv keeps a middle width of at least the cell width. Kept
channels get all-ones filter masks (step 5), so pruned filters that are kept to fill a
width come back: the only filter regrowth of the method (step 4).

Deliberate differences from the official ``prune_kernel``:

* **One channel subset per cell (I.8).** Identity and pooling ops pass their input's
  channels straight through, and a node adds its ops' outputs channel by channel, so
  channel ``j`` of every state of a cell is one "slot". The reference chooses output
  filters per op and input channels per conv (by L1 norm or mask counts), which mixes
  slots up and pairs inherited weights with the wrong channels. Here each cell keeps
  one sorted slot subset ``S``, ranked by the sum over the cell's gates of
  ``sigmoid(beta) * filter_mask`` (ties broken by ``sigmoid(beta)`` alone, so the
  pruned slots with the largest scores come back first), and every module of the
  cell, input and output side, is sliced by ``S``. The next cells' preprocess convs
  keep the input columns ``[S, C + S, 2C + S, 3C + S]`` of the concatenated output,
  and so does the classifier after the last cell. When the dropped slots were gated
  to exactly zero everywhere, the narrower network computes the same function.
* **Batch norms keep their state (I.9).** Weight, bias, running mean / variance and
  ``num_batches_tracked`` are all copied; the reference copies only the weight.
* **No width pinning.** The reference pins the stage-2 end cell and the last cell to a
  quarter of the auxiliary head's and classifier's input widths; here the classifier
  is sliced instead, and heads built after the shrink read ``cell_out_channels``.
  Each report entry lists the output columns a shrunk cell kept, so a caller can slice
  an existing head instead of rebuilding it.

* **FactorizedReduce outputs are an approximation.** Its first half of channels comes
  from an unshifted 1x1 conv and its second from a one-pixel-shifted one. Kept rows of
  the stacked weights are split into two halves again, so a row can change halves
  (and shift); exact when the kept slots split evenly between the old halves.

Committed-dead ops of a narrowed cell are rebuilt fresh at the new width (drawing
their initial weights from the global RNG), so a later ``regrow`` brings them back at
the current width. A cell whose planned width equals its current width keeps its
modules and Parameters (except a separable conv whose middle can narrow) and only has
its filter masks reset to ones. New modules start in the replaced module's train /
eval mode; the cells, which keep their discretizers, gate them from the next pass on.
Callers rebuild optimisers afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from mgas_bench.profiling import WEIGHT_MASK
from plugins.mgdarts.eval_ops import FactorizedReduce
from plugins.mgdarts.genotype import PRIMITIVES
from plugins.mgdarts.search_ops import (
    DilConv,
    FilterGate,
    Preprocess,
    ReLUConvBN,
    SearchOp,
    SepConv,
    SkipReduce,
    make_search_op,
)

if TYPE_CHECKING:
    from plugins.mgdarts.supernet import MGCell, MGSupernet

# Channel indices to keep; None keeps every channel of that side.
Index = torch.Tensor | None


@dataclass(frozen=True)
class CellShrink:
    """One shrunk cell: its width before and after, and its own parameter count."""

    cell: int
    old_width: int
    new_width: int
    params_before: int
    params_after: int
    # Kept slots (indices into the old width) and kept columns of the old cell output.
    slots: tuple[int, ...]
    output_columns: tuple[int, ...]


@dataclass(frozen=True)
class ShrinkReport:
    """Per shrunk cell the widths and parameter counts; totals over the whole supernet."""

    cells: tuple[CellShrink, ...]
    params_before: int
    params_after: int

    def widths(self) -> dict[int, tuple[int, int]]:
        """``{cell: (old width, new width)}``."""
        return {c.cell: (c.old_width, c.new_width) for c in self.cells}


# ------------------------------------------------------------------ planning


def even_width(width: int) -> int:
    """Round up to even, at least 2 (FactorizedReduce splits a width in two halves)."""
    return max(2, width + width % 2)


def base_width(model: MGSupernet, index: int) -> int:
    """The width cell ``index`` was built with: ``spec.channels`` times 1, 2 or 4."""
    doublings = sum(1 for r in model.reductions if r <= index)
    return model.spec.channels * 2**doublings


def _alive(gate: FilterGate) -> int:
    return int((gate.filter_mask > 0).sum())


def state_widths(cell: MGCell) -> list[int]:
    """D.5 step 1: the widths of the 6 states from the committed filter masks.

    A preprocess output counts its gate's alive filters; a node takes the largest
    alive ``gate_out`` count over the committed-alive sep/dil ops on its edges, or
    inherits the previous state's width if none of its ops is a conv. Each width is
    rounded up to even, at least 2.
    """
    widths = [even_width(_alive(cell.preprocess0.gate)), even_width(_alive(cell.preprocess1.gate))]
    alive = cell.op_mask > 0
    for rows in cell.node_slices:
        convs = [
            _alive(op.gate_out)
            for edge in range(rows.start, rows.stop)
            for index, op in enumerate(cell.edges[edge].ops)
            if alive[edge, index] and isinstance(op, SepConv | DilConv)
        ]
        widths.append(even_width(max(convs)) if convs else widths[-1])
    return widths


def target_width(model: MGSupernet, index: int) -> int:
    """D.5 step 2: the uniform width of cell ``index``, never above its current width.

    The mean width (truncated, then rounded up to even) if it reaches half the
    construction width; else the largest state width if that does; else half the
    construction width.
    """
    cell = model.cells[index]
    widths = state_widths(cell)
    base = base_width(model, index)
    average = even_width(int(sum(widths) / len(widths)))
    if average >= base / 2:
        width = average
    elif max(widths) >= base / 2:
        width = max(widths)
    else:
        width = even_width(math.ceil(base / 2))
    return min(width, cell.C)


def _ranked(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices by ``primary`` descending, then ``secondary`` descending, then index."""
    order = torch.argsort(secondary, descending=True, stable=True)
    return order[torch.argsort(primary[order], descending=True, stable=True)]


def _cell_gates(cell: MGCell) -> list[FilterGate]:
    """Gates on the cell's slots: both preprocess gates and every alive op's ``gate_out``."""
    gates = [cell.preprocess0.gate, cell.preprocess1.gate]
    for edge, index in cell.alive_ops():
        out = cell.op(edge, index).filter_gates().get("out")
        if out is not None:
            gates.append(out)
    return gates


def slot_scores(cell: MGCell) -> tuple[torch.Tensor, torch.Tensor]:
    """(importance, tie-break) per slot: sums of sigmoid(beta) * mask, and of sigmoid(beta)."""
    importance = cell.alpha.new_zeros(cell.C)
    tie_break = cell.alpha.new_zeros(cell.C)
    for gate in _cell_gates(cell):
        score = torch.sigmoid(gate.beta.detach())
        importance += score * gate.filter_mask
        tie_break += score
    return importance, tie_break


def choose_slots(cell: MGCell, width: int) -> torch.Tensor:
    """The ``width`` most important slots of a cell, sorted ascending."""
    importance, tie_break = slot_scores(cell)
    return _ranked(importance, tie_break)[:width].sort().values


def mid_channels(op: SepConv, width: int) -> torch.Tensor:
    """D.5 step 3-4 for a SepConv's middle: alive filters first, refilled by top sigmoid(beta).

    Keeps ``max(#alive, even(width))`` channels, at most the current middle width.
    """
    gate = op.gate_mid
    alive = (gate.filter_mask > 0).to(gate.beta.dtype)
    keep = min(max(int(alive.sum()), even_width(width)), alive.numel())
    return _ranked(alive, torch.sigmoid(gate.beta.detach()))[:keep].sort().values


def _output_columns(slots: torch.Tensor, width: int, nodes: int) -> torch.Tensor:
    """Columns of the concatenated cell output that belong to the kept slots."""
    return torch.cat([k * width + slots for k in range(nodes)])


# ------------------------------------------------------------------- slicing


def _take(tensor: torch.Tensor, rows: Index, cols: Index = None) -> torch.Tensor:
    if rows is not None:
        tensor = tensor[rows.to(tensor.device)]
    if cols is not None:
        tensor = tensor[:, cols.to(tensor.device)]
    return tensor


def _set(dst: torch.Tensor, src: torch.Tensor) -> None:
    dst.copy_(src)


def _placed(new: nn.Module, old: nn.Module, ref: torch.Tensor) -> nn.Module:
    """``new`` on ``ref``'s device and dtype, in ``old``'s train / eval mode."""
    new.to(device=ref.device, dtype=ref.dtype)
    return new.train(old.training)


def _copy_conv(new: nn.Conv2d, old: nn.Conv2d, rows: Index, cols: Index) -> None:
    """Weights (and a weight mask, if any) sliced by output ``rows`` and input ``cols``."""
    _set(new.weight, _take(old.weight, rows, cols))
    if hasattr(old, WEIGHT_MASK) and hasattr(new, WEIGHT_MASK):
        _set(getattr(new, WEIGHT_MASK), _take(getattr(old, WEIGHT_MASK), rows, cols))


def _copy_depthwise(new: nn.Conv2d, old: nn.Conv2d, channels: torch.Tensor) -> None:
    _copy_conv(new, old, channels, None)


def _copy_bn(new: nn.BatchNorm2d, old: nn.BatchNorm2d, rows: Index) -> None:
    """All of a batch norm's state, sliced (the reference keeps only the weight, I.9)."""
    if old.affine:
        _set(new.weight, _take(old.weight, rows))
        _set(new.bias, _take(old.bias, rows))
    if old.track_running_stats:
        new.running_mean.copy_(_take(old.running_mean, rows))
        new.running_var.copy_(_take(old.running_var, rows))
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    new.momentum, new.eps = old.momentum, old.eps


def _copy_gate(new: FilterGate, old: FilterGate, rows: Index) -> None:
    """beta sliced; the new filter mask stays all ones for the kept channels (D.5 step 5)."""
    _set(new.beta, _take(old.beta, rows))


def _shrunk_reduce(
    old: FactorizedReduce, cols: Index, rows: Index, ref: torch.Tensor
) -> FactorizedReduce:
    """A FactorizedReduce sliced by input ``cols`` and output ``rows`` (None: keep all).

    Output channel j of the old module comes from conv_1 (unshifted input) for the first
    half and conv_2 (input shifted by one pixel) for the second. The kept rows of the
    stacked [conv_1; conv_2] weights are split in two halves again, so a row may move to
    the other conv and then sees the input shifted by one pixel less or more: an
    approximation, exact when the kept rows split evenly between the two old halves.
    """
    C_in = old.conv_1.in_channels if cols is None else len(cols)
    C_out = old.bn.num_features if rows is None else len(rows)
    new = _placed(FactorizedReduce(C_in, C_out), old, ref)
    stacked = _take(torch.cat([old.conv_1.weight, old.conv_2.weight]), rows, cols)
    half = C_out // 2
    _set(new.conv_1.weight, stacked[:half])
    _set(new.conv_2.weight, stacked[half:])
    _copy_bn(new.bn, old.bn, rows)
    return new


def _shrink_preprocess(pre: Preprocess, cols: Index, rows: Index, ref: torch.Tensor) -> None:
    """Slice a preprocess in place: its conv's input ``cols`` and output ``rows``."""
    if cols is None and rows is None:
        return
    op = pre.op
    if isinstance(op, FactorizedReduce):
        pre.op = _shrunk_reduce(op, cols, rows, ref)
    elif isinstance(op, ReLUConvBN):
        C_in = op.conv.in_channels if cols is None else len(cols)
        C_out = op.conv.out_channels if rows is None else len(rows)
        new = _placed(ReLUConvBN(C_in, C_out), op, ref)
        _copy_conv(new.conv, op.conv, rows, cols)
        _copy_bn(new.bn, op.bn, rows)
        pre.op = new
    else:
        raise TypeError(f"cannot shrink a preprocess of type {type(op).__name__}")
    if rows is not None:
        old = pre.gate
        gate = _placed(FilterGate(len(rows), old.thresholded), old, ref)
        _copy_gate(gate, old, rows)
        pre.gate = gate


def _shrunk_op(op: SearchOp, slots: torch.Tensor, ref: torch.Tensor) -> SearchOp:
    """An alive op with input and output channels ``slots`` (the cell's kept slots)."""
    width = len(slots)
    if isinstance(op, SepConv):
        mid = mid_channels(op, width)
        k, stride = op.dw1.kernel_size[0], op.dw1.stride[0]
        new = SepConv(width, len(mid), width, k, stride)
        new = _placed(new, op, ref)
        _copy_depthwise(new.dw1, op.dw1, slots)
        _copy_conv(new.pw1, op.pw1, mid, slots)
        _copy_bn(new.bn1, op.bn1, mid)
        _copy_gate(new.gate_mid, op.gate_mid, mid)
        _copy_depthwise(new.dw2, op.dw2, mid)
        _copy_conv(new.pw2, op.pw2, slots, mid)
        _copy_bn(new.bn2, op.bn2, slots)
        _copy_gate(new.gate_out, op.gate_out, slots)
        return new
    if isinstance(op, DilConv):
        k, stride = op.dw.kernel_size[0], op.dw.stride[0]
        new = _placed(DilConv(width, width, k, stride), op, ref)
        _copy_depthwise(new.dw, op.dw, slots)
        _copy_conv(new.pw, op.pw, slots, slots)
        _copy_bn(new.bn, op.bn, slots)
        _copy_gate(new.gate_out, op.gate_out, slots)
        return new
    if isinstance(op, SkipReduce):
        new = _placed(SkipReduce(width, width), op, ref)
        new.reduce = _shrunk_reduce(op.reduce, slots, slots, ref)
        _copy_gate(new.gate_out, op.gate_out, slots)
        return new
    if any(True for _ in op.parameters()) or any(True for _ in op.buffers()):
        raise TypeError(f"cannot shrink an op of type {type(op).__name__}")
    return op  # identity or pooling: no weights, no width


def _shrink_edges(cell: MGCell, slots: torch.Tensor, ref: torch.Tensor) -> None:
    width = len(slots)
    alive = (cell.op_mask > 0).tolist()
    for edge, mixed in enumerate(cell.edges):
        for index, name in enumerate(PRIMITIVES):
            op = mixed.ops[index]
            if alive[edge][index]:
                mixed.ops[index] = _shrunk_op(op, slots, ref)
            elif any(True for _ in op.parameters()):
                fresh = make_search_op(name, width, mixed.stride)
                mixed.ops[index] = _placed(fresh, op, ref)


def _refresh_full_width(cell: MGCell, ref: torch.Tensor) -> None:
    """A cell that keeps its width: filter masks back to ones, modules kept.

    Only a SepConv whose middle is wider than D.5 step 3 now allows (alive middle
    filters, at least the cell width) is rebuilt, with a narrower middle.
    """
    full = torch.arange(cell.C, device=ref.device)
    for edge, index in cell.alive_ops():
        op = cell.op(edge, index)
        if isinstance(op, SepConv) and len(mid_channels(op, cell.C)) < op.pw1.out_channels:
            cell.edges[edge].ops[index] = _shrunk_op(op, full, ref)
    for module in cell.modules():
        if isinstance(module, FilterGate):
            module.filter_mask.fill_(1.0)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def shrink(model: MGSupernet, upto: int) -> ShrinkReport:
    """Physically narrow cells ``0..upto`` of ``model`` in place (see the module docstring).

    Also slices the input side of cells ``upto + 1`` and ``upto + 2`` (their
    preprocess convs read the shrunk cells) and, if the last cell shrinks, the
    classifier. The stem is never shrunk. Updates ``cell.C`` and the cached output
    widths (``cell_out_channels``). alpha and the thresholds keep their identity;
    every other Parameter of a touched module is new. A cell that keeps its width
    keeps its modules (but a separable conv's middle may narrow); its filter masks are
    reset to ones (D.5 step 5).
    """
    last = model._upto(upto)
    cells = model.cells
    params_before = _count(model)
    cell_params = [_count(cells[i]) for i in range(last + 1)]
    old_widths = [cells[i].C for i in range(last + 1)]
    slots = {i: choose_slots(cells[i], target_width(model, i)) for i in range(last + 1)}
    columns = {
        i: _output_columns(s, cells[i].C, cells[i].nodes).to(s.device) for i, s in slots.items()
    }
    # Cells that keep every slot: nothing to slice, in them or in what reads them.
    narrowed = {i: s for i, s in slots.items() if len(s) < cells[i].C}
    sliced = {i: columns[i] for i in narrowed}

    for i in range(min(last + 2, len(cells) - 1) + 1):
        cell = cells[i]
        ref = cell.alpha
        rows = narrowed.get(i)
        # Cells 0 and 1 read the stem (no entry for negative indices): full width.
        _shrink_preprocess(cell.preprocess0, sliced.get(i - 2), rows, ref)
        _shrink_preprocess(cell.preprocess1, sliced.get(i - 1), rows, ref)
        if rows is not None:
            _shrink_edges(cell, rows, ref)
            cell.C = len(rows)
            model._cell_channels[i] = cell.nodes * cell.C
        elif i in slots:
            _refresh_full_width(cell, ref)

    if last == len(cells) - 1 and last in sliced:
        old = model.classifier
        linear = nn.Linear(len(sliced[last]), old.out_features, bias=old.bias is not None)
        new = _placed(linear, old, old.weight)
        _set(new.weight, _take(old.weight, None, sliced[last]))
        if old.bias is not None:
            _set(new.bias, old.bias)
        model.classifier = new

    report = tuple(
        CellShrink(
            cell=i,
            old_width=old_widths[i],
            new_width=cells[i].C,
            params_before=cell_params[i],
            params_after=_count(cells[i]),
            slots=tuple(slots[i].tolist()),
            output_columns=tuple(columns[i].tolist()),
        )
        for i in range(last + 1)
    )
    return ShrinkReport(report, params_before, _count(model))
