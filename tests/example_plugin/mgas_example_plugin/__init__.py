"""An mgas_bench plugin from outside the project: everything it uses is public API.

* ``darts-noskip``: DARTS's derivation, but never choosing ``skip_connect`` (a common
  remedy for DARTS's collapse into parameter-free cells).
* ``edge``: a new granularity whose units are whole edges of a DARTS-style cell,
  scored by the largest op weight on the edge, with its own discretizer
  ``edge-top1`` that keeps the single strongest edge of each node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mgas_bench.components import Discretizer, Granularity, UnitGroup
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
    return [NoSkipDiscretizer(), EdgeTop1()]


@hookimpl
def register_granularities():
    return [EdgeGranularity()]
