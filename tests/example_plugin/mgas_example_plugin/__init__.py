"""An mgas_bench plugin from outside the project: everything it uses is public API.

* ``darts-noskip``: DARTS's derivation, but never choosing ``skip_connect`` (a common
  remedy for DARTS's collapse into parameter-free cells).
* ``edge``: a new granularity whose units are whole edges of a DARTS-style cell.
  Its ``unit_groups`` score each edge by its strongest op (for derivations such as
  ``edge-top1``, which keeps the single strongest edge of each node); its ``attach``
  gives a pruning search (``mg-darts``) a learnable gate per edge, decided by
  ``edge-threshold``. Pruning an edge prunes its operations, through the supernet's own
  operation groups, so the exported architecture loses them too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mgas_bench.components import Discretizer, Granularity, UnitGates, UnitGroup
from mgas_bench.hookspecs import hookimpl


class NoSkipDiscretizer(Discretizer):
    name = "darts-noskip"
    description = "DARTS derivation that never picks skip_connect"
    granularity = "operation"

    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        banned = torch.tensor([label in ("none", "skip_connect") for label in group.labels])
        scores = group.scores.detach().masked_fill(banned, float("-inf"))
        best_score, best_op = scores.max(dim=1)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for edge in best_score.topk(min(2, len(best_score))).indices.tolist():
            keep[edge, best_op[edge]] = True
        return keep


class EdgeGranularity(Granularity):
    """Edges as units, derived from the supernet's operation groups."""

    name = "edge"
    description = "whole edges of a cell, scored by their strongest op"

    def unit_groups(self, supernet: torch.nn.Module) -> list[UnitGroup]:
        groups = []
        for group in supernet.unit_groups("operation"):
            groups.append(
                UnitGroup(
                    key=f"{group.key}/edges",
                    granularity=self.name,
                    scores=group.scores.max(dim=1).values,
                    mask=group.mask.amax(dim=1),
                    meta=dict(group.meta),
                )
            )
        return groups

    def attach(self, supernet: nn.Module) -> EdgeGates:
        return EdgeGates(supernet)


class EdgeGates(UnitGates):
    """A gate sigma(s_e) * D(s_e) * M_e on the output of every edge, one group per node.

    Works on any supernet whose operation groups name their ``cell`` and ``edges`` in
    ``meta`` and whose cells keep their edge modules in ``cells[i].edges``.
    """

    granularity = "edge"

    def __init__(self, supernet: nn.Module):
        op_groups = supernet.unit_groups("operation")
        cells = getattr(supernet, "cells", None)
        if (
            not op_groups
            or cells is None
            or any("cell" not in g.meta or "edges" not in g.meta for g in op_groups)
        ):
            raise ValueError(
                "edge gates need a cell-based supernet: operation groups with meta 'cell' "
                "and 'edges', and the edge modules in `cells[i].edges`"
            )
        self._supernet = supernet
        self._discretize: Callable[[UnitGroup], torch.Tensor] = functools.partial(
            EdgeThreshold().discretize, options={}
        )
        device = op_groups[0].mask.device
        self._specs = [(g.key, g.meta) for g in op_groups]
        self._scores = [
            nn.Parameter(torch.zeros(len(m["edges"]), device=device)) for _, m in self._specs
        ]
        self._thresholds = [nn.Parameter(torch.zeros((), device=device)) for _ in self._specs]
        self._masks = [torch.ones(len(m["edges"]), device=device) for _, m in self._specs]
        self._handles = [
            cells[meta["cell"]]
            .edges[edge]
            .register_forward_hook(functools.partial(self._gate_output, index, position))
            for index, (_, meta) in enumerate(self._specs)
            for position, edge in enumerate(meta["edges"])
        ]

    def _group(self, index: int) -> UnitGroup:
        key, meta = self._specs[index]
        return UnitGroup(
            key=f"{key}/edges",
            granularity=self.granularity,
            scores=torch.sigmoid(self._scores[index]),
            mask=self._masks[index],
            meta={**meta, "threshold": self._thresholds[index]},
        )

    def _gate_output(self, index, position, module, inputs, output):
        if output is None:  # an edge with no alive operation adds nothing
            return None
        group = self._group(index)
        gate = group.scores * self._discretize(group) * group.mask
        return output * gate[position]

    def groups(self) -> list[UnitGroup]:
        return [self._group(i) for i in range(len(self._specs))]

    def score_parameters(self) -> list[nn.Parameter]:
        return list(self._scores)

    def threshold_parameters(self) -> list[nn.Parameter]:
        return list(self._thresholds)

    def use_discretizer(self, discretize: Callable[[UnitGroup], torch.Tensor]) -> None:
        self._discretize = discretize

    @torch.no_grad()
    def commit(self, groups: list[UnitGroup]) -> int:
        op_masks = {g.key: g.mask for g in self._supernet.unit_groups("operation")}
        pruned = 0
        for group in groups:
            ops = op_masks[group.key.removesuffix("/edges")]  # rows: this node's edges
            before = int(group.mask.sum())
            keep = (self._discretize(group) > 0).to(group.mask.dtype) * group.mask
            has_ops = ops.sum(dim=1) > 0
            if not bool((keep.bool() & has_ops).any()) and bool(has_ops.any()):
                # Keep the node connected: its strongest edge that still has operations.
                scores = group.scores.masked_fill(~has_ops, float("-inf"))
                keep[scores.argmax()] = 1.0
            group.mask.copy_(keep)
            ops.mul_(keep[:, None])
            pruned += before - int(keep.sum())
        return pruned

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class EdgeThreshold(Discretizer):
    name = "edge-threshold"
    description = "learnable threshold on edge scores: H(s - t), sigmoid straight-through gradient"
    granularity = "edge"

    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        z = group.scores - group.meta["threshold"]
        soft = torch.sigmoid(z / 0.1)
        return (z > 0).to(z.dtype) + soft - soft.detach()


class EdgeTop1(Discretizer):
    name = "edge-top1"
    description = "keep the strongest incoming edge of each node"
    granularity = "edge"

    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        keep = torch.zeros_like(group.scores, dtype=torch.bool)
        keep[group.scores.argmax()] = True
        return keep


@hookimpl
def register_discretizers():
    return [NoSkipDiscretizer(), EdgeTop1(), EdgeThreshold()]


@hookimpl
def register_granularities():
    return [EdgeGranularity()]
