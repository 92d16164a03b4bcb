"""DARTS's derivation rule, as a discretizer of the operation granularity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mgas_bench.components import Discretizer, UnitGroup


class TopEdgesDiscretizer(Discretizer):
    """Per node, keep the ``edges`` strongest incoming edges and the strongest op on each.

    An edge's strength is its largest op weight, ignoring the ops in ``exclude``
    (DARTS ignores ``none``). Groups are one node each: scores of shape (edges, ops).
    """

    granularity = "operation"

    def __init__(self, name: str, description: str, exclude: tuple[str, ...], edges: int = 2):
        self.name, self.description = name, description
        self.exclude, self.edges = exclude, edges

    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        labels = group.labels or ()
        scores = group.scores.detach().masked_fill(group.mask == 0, float("-inf"))
        excluded = torch.tensor(
            [label in self.exclude for label in labels], dtype=torch.bool, device=scores.device
        )
        scores = scores.masked_fill(excluded, float("-inf"))
        best_score, best_op = scores.max(dim=1)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        n_edges = min(self.edges, int(torch.isfinite(best_score).sum()))
        for edge in best_score.topk(n_edges).indices.tolist():
            keep[edge, best_op[edge]] = True
        return keep


def darts_top2() -> TopEdgesDiscretizer:
    return TopEdgesDiscretizer(
        "darts-top2",
        "DARTS derivation: 2 strongest incoming edges per node, strongest non-none op on each",
        exclude=("none",),
    )
