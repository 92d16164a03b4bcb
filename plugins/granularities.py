"""The standard granularities of searchable units, and a granularity-agnostic pruner.

The three granularities delegate to the supernet, which knows where its own
operations, filters and weights are; a search space that lacks one simply
returns no groups for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mgas_bench.components import Granularity, Pruner, PruneReport, UnitGroup
from mgas_bench.hookspecs import hookimpl


class SupernetGranularity(Granularity):
    def __init__(self, name: str, description: str):
        self.name, self.description = name, description


class FixedRatioPruner(Pruner):
    """Keeps a fixed share of each group's units, by score: pruning without adaptation.

    Option ``retention`` (default 0.5) is the share of units kept per group,
    rounded up so that no group is emptied. The discretizer is not consulted:
    this is the "fixed retention ratio" baseline that adaptive pruning is
    compared against.
    """

    name = "fixed-ratio"
    description = "keep the top `retention` share of each group's units by score"

    def prune(
        self,
        groups: list[UnitGroup],
        discretize: Callable[[UnitGroup], torch.Tensor],
        options: Mapping[str, Any],
    ) -> PruneReport:
        retention = float(options.get("retention", 0.5))
        if not 0.0 < retention <= 1.0:
            raise ValueError(f"retention must be in (0, 1], got {retention}")
        pruned = alive = total = 0
        for group in groups:
            before = int(group.mask.sum())
            keep_n = max(1, math.ceil(retention * group.mask.numel()))
            scores = group.scores.detach().masked_fill(group.mask == 0, float("-inf")).flatten()
            keep = torch.zeros_like(scores, dtype=torch.bool)
            keep[scores.topk(min(keep_n, before)).indices] = True
            group.mask.mul_(keep.view_as(group.mask).to(group.mask.dtype))
            after = int(group.mask.sum())
            pruned += before - after
            alive += after
            total += group.mask.numel()
        return PruneReport(pruned=pruned, alive=alive, total=total)


@hookimpl
def register_granularities():
    return [
        SupernetGranularity("operation", "candidate operations on each edge of a cell"),
        SupernetGranularity("filter", "output channels (filters) of convolutions"),
        SupernetGranularity("weight", "individual convolution weights"),
    ]


@hookimpl
def register_pruners():
    return [FixedRatioPruner()]
