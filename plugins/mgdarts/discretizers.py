"""MG-DARTS's learnable discretization functions, one per granularity (ALGORITHM.md C.1).

Each is ``H(score - t)``: a hard step whose threshold ``t`` is learned with the
architecture, with the Dynamic Sparse Training surrogate gradient carrying the task
loss back to both the score and ``t`` (:mod:`plugins.mgdarts.gates`). The scores differ
by granularity (sigmoid(alpha) for operations, sigmoid(beta) for filters, raw |w| for
weights) and so do the thresholds' learning rates (the reference moves weight
thresholds 100x slower); the search space supplies the scores and
``group.meta["threshold"]``, and the search sets the learning rates.

They are registered components, so the search asks the registry for them by name
(option ``discretizers`` of ``mg-darts``), and a plugin can put its own function in
their place without touching the search.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mgas_bench.components import Discretizer, UnitGroup
from plugins.mgdarts.gates import threshold_gate


class LearnedThreshold(Discretizer):
    """D_g(s) = H(s - t_g) with a learnable per-op-instance threshold t_g."""

    def __init__(self, granularity: str):
        self.granularity = granularity
        self.name = f"mg-threshold-{granularity}"
        self.description = (
            f"MG-DARTS learnable threshold on {granularity} scores: H(score - t), "
            "DST surrogate gradient"
        )

    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        threshold = group.meta.get("threshold")
        if threshold is None:
            raise ValueError(
                f"{self.name} needs a learnable threshold in the meta of group {group.key!r}; "
                "it decides units of a pruning search, not a derivation"
            )
        return threshold_gate(group)


def threshold_discretizers() -> list[LearnedThreshold]:
    return [LearnedThreshold(g) for g in ("operation", "filter", "weight")]
