"""A cell's filter and weight gates, evaluated for all of its units at once (ALGORITHM.md B.3).

Every gate is elementwise, ``m = D(score - t) * M``, but a cell holds about 250 gated
modules: one channel group after each batch norm and every separable or dilated conv
of every candidate op. Gating them one by one cost a few kernels and autograd nodes
each, which made a search step issue four times DARTS's operator calls (and run four
times slower per image on a GPU, where kernels this small are bound by launch cost).
Here a cell concatenates the scores of all its committed-alive units, calls each
granularity's discretizer once with a threshold per unit, and splits the result back.

The gate values are exactly those of gating each module alone. What differs is the
order in which floating point sums a threshold's gradient over its units: one gather's
backward over the whole op instead of one reduction per module.

A discretizer therefore sees one group per cell and granularity, keyed
``cell/filters`` or ``cell/weights``, with ``meta["threshold"]`` shaped like the scores
and ``meta["segments"]`` giving the unit count of each gated module in order, for a
discretizer that decides per module rather than per unit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mgas_bench.components import UnitGroup
from mgas_bench.profiling import WEIGHT_MASK
from plugins.mgdarts.search_ops import FilterGate, MaskedConv2d, SearchOp

Discretize = Callable[[UnitGroup], torch.Tensor]


@dataclass(frozen=True)
class GatedUnits:
    """The modules a cell gates, in the order their units are concatenated.

    ``filter_gates`` lists the thresholded gates first (the two preprocess gates, then
    each alive op's), then the unthresholded ones (a stride-2 skip's, ALGORITHM.md
    I.10). ``filter_owner`` maps each thresholded unit to its threshold in
    ``cat([t_pre, t_fil.flatten()])``; ``weight_owner`` maps each conv weight to its
    threshold in ``t_wt.flatten()``.
    """

    filter_gates: tuple[FilterGate, ...]
    thresholded_gates: int
    filter_owner: torch.Tensor
    convs: tuple[MaskedConv2d, ...]
    weight_owner: torch.Tensor


def gated_units(
    preprocess: Sequence[FilterGate],
    alive_ops: Sequence[tuple[int, SearchOp]],
    device: torch.device,
) -> GatedUnits:
    """The gated modules of ``preprocess`` gates and ``alive_ops`` ((flat op index, op))."""
    thresholded: list[tuple[int, FilterGate]] = [(k, gate) for k, gate in enumerate(preprocess)]
    unthresholded: list[FilterGate] = []
    convs: list[tuple[int, MaskedConv2d]] = []
    offset = len(preprocess)
    for index, op in alive_ops:
        for gate in op.filter_gates().values():
            if gate.thresholded:
                thresholded.append((offset + index, gate))
            else:
                unthresholded.append(gate)
        convs.extend((index, conv) for conv in op.masked_convs())
    return GatedUnits(
        filter_gates=tuple(gate for _, gate in thresholded) + tuple(unthresholded),
        thresholded_gates=len(thresholded),
        filter_owner=_owner([(i, g.beta.numel()) for i, g in thresholded], device),
        convs=tuple(conv for _, conv in convs),
        weight_owner=_owner([(i, c.weight.numel()) for i, c in convs], device),
    )


def _owner(sizes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    return _cached_owner(tuple(sizes), device)


# The layout changes only at commits, regrowth and shrinks, so building the index once
# per layout keeps a host-to-device copy out of every GPU step.
@functools.lru_cache(maxsize=256)
def _cached_owner(sizes: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    index = torch.tensor([i for i, _ in sizes], dtype=torch.long)
    counts = torch.tensor([n for _, n in sizes], dtype=torch.long)
    return index.repeat_interleave(counts).to(device)


class CellGates:
    """Filter scales ``sigmoid(beta) * m_f`` and gated weights ``W * m_w`` of one cell pass.

    The hard gates (``m_f``, ``m_w``) are kept flat and split per module only when a
    commit asks for them, so a training pass does not pay for it.
    """

    def __init__(
        self,
        units: GatedUnits,
        filter_thresholds: torch.Tensor,
        weight_thresholds: torch.Tensor,
        discretize_filters: Discretize | None,
        discretize_weights: Discretize | None,
    ):
        self._scales, self._filter_hard = _filter_gates(
            units, filter_thresholds, discretize_filters
        )
        self._weights, self._weight_hard = _weight_gates(
            units, weight_thresholds, discretize_weights
        )
        self._filter_gates, self._convs = units.filter_gates, units.convs

    def scale(self, gate: FilterGate) -> torch.Tensor:
        return self._scales[gate]

    def weight(self, conv: MaskedConv2d) -> torch.Tensor:
        return self._weights[conv]

    def filter_hard(self) -> dict[FilterGate, torch.Tensor]:
        sizes = [gate.beta.numel() for gate in self._filter_gates]
        return dict(zip(self._filter_gates, self._filter_hard.split(sizes), strict=True))

    def weight_hard(self) -> dict[MaskedConv2d, torch.Tensor]:
        pieces = self._weight_hard.split([conv.weight.numel() for conv in self._convs])
        return {conv: m.view_as(conv.weight) for conv, m in zip(self._convs, pieces, strict=True)}


def _filter_gates(
    units: GatedUnits, thresholds: torch.Tensor, discretize: Discretize | None
) -> tuple[dict[FilterGate, torch.Tensor], torch.Tensor]:
    """Per-gate scales, and the flat hard gates of all the cell's filters."""
    gates = units.filter_gates
    if not gates:
        return {}, thresholds.new_zeros(0)
    soft = torch.sigmoid(torch.cat([gate.beta for gate in gates]))
    committed = torch.cat([gate.filter_mask for gate in gates])
    hard = committed
    sizes = [gate.beta.numel() for gate in gates]
    segments = sizes[: units.thresholded_gates]
    n = sum(segments)
    if discretize is not None and n:
        group = UnitGroup(
            "cell/filters",
            "filter",
            soft[:n],
            committed[:n],
            None,
            {"threshold": thresholds[units.filter_owner], "segments": segments},
        )
        hard = torch.cat([discretize(group) * committed[:n], committed[n:]])
    return dict(zip(gates, (soft * hard).split(sizes), strict=True)), hard


def _weight_gates(
    units: GatedUnits, thresholds: torch.Tensor, discretize: Discretize | None
) -> tuple[dict[MaskedConv2d, torch.Tensor], torch.Tensor]:
    """Per-conv gated weights, and the flat hard gates of all the cell's weights."""
    convs = units.convs
    if not convs:
        return {}, thresholds.new_zeros(0)
    weights = torch.cat([conv.weight.reshape(-1) for conv in convs])
    committed = torch.cat([getattr(conv, WEIGHT_MASK).reshape(-1) for conv in convs])
    hard = committed
    sizes = [conv.weight.numel() for conv in convs]
    if discretize is not None:
        group = UnitGroup(
            "cell/weights",
            "weight",
            weights.abs(),  # raw |W|, as the reference compares
            committed,
            None,
            {"threshold": thresholds[units.weight_owner], "segments": sizes},
        )
        hard = discretize(group) * committed
    gated = {
        conv: w.view_as(conv.weight)
        for conv, w in zip(convs, (weights * hard).split(sizes), strict=True)
    }
    return gated, hard
