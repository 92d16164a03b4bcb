"""The DARTS search space: a supernet of mixed operations with shared normal/reduce cells.

Follows DARTS's ``model_search.py``: 8 candidates per edge weighted by a softmax of
architecture parameters, search-time batch norms without affine parameters, pools
followed by batch norm, reductions at 1/3 and 2/3 of the depth.

A cell computes each state's ReLU and pools once for all the edges that read it, and runs
some convolutions through faster kernels on CPU (``search_kernels``); the modules, and so
the parameters and checkpoints, are DARTS's.

Two options reproduce other implementations' supernets on the same space: NNI's hub
space uses affine batch norms everywhere and no batch norm after pools
(``search_affine = true``, ``pool_bn = false``), which changes what the search picks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.darts.ops import OPS, PRIMITIVES, DilConv, FactorizedReduce, ReLUConvBN, SepConv
from baselines.darts.search_kernels import SharedInput, depthwise_conv, pointwise_conv
from mgas_bench.components import SearchSpace, Supernet, SupernetSpec, UnitGroup

CELL_TYPES = ("normal", "reduce")


def edge_inputs(nodes: int) -> list[list[int]]:
    """For each intermediate node, the state indices its incoming edges read (in edge order)."""
    return [list(range(node + 2)) for node in range(nodes)]


class MixedOp(nn.Module):
    def __init__(self, C: int, stride: int, affine: bool = False, pool_bn: bool = True):
        super().__init__()
        self.pool_bn = pool_bn
        self.candidates = nn.ModuleList()
        for name in PRIMITIVES:
            op = OPS[name](C, stride, affine)
            if pool_bn and "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.candidates.append(op)
        # `none` contributes weight * 0 to the sum and nothing to any gradient, so it
        # is never executed; the result is identical and the step is cheaper.
        self._none = PRIMITIVES.index("none")

    def forward(
        self,
        x: torch.Tensor,
        weights: torch.Tensor,
        alive: list[bool],
        shared: SharedInput | None = None,
    ) -> torch.Tensor:
        """The weighted sum of the alive candidates on ``x``.

        ``shared`` (a cell passes one per state) holds the ReLU and pools of ``x`` that the
        other edges reading the same state have already computed.
        """
        shared = shared if shared is not None else SharedInput(x)
        out = 0
        for index, (w, keep) in enumerate(zip(weights, alive, strict=True)):
            if keep and index != self._none:
                out = out + w * self._candidate(index, shared)
        if isinstance(out, int):  # every other candidate pruned: the edge is `none`
            return weights[self._none] * self.candidates[self._none](x)
        return out

    def _candidate(self, index: int, shared: SharedInput) -> torch.Tensor:
        op = self.candidates[index]
        if isinstance(op, SepConv):
            first, second = op
            return _after_activation(
                second, second[0](_after_activation(first, shared.apply(first[0])))
            )
        if isinstance(op, DilConv):
            return _after_activation(op, shared.apply(op[0]))
        if "pool" in PRIMITIVES[index]:
            if self.pool_bn:
                pool, bn = op
                return bn(shared.apply(pool))
            return shared.apply(op)
        return op(shared.x)


def _after_activation(op: DilConv, x: torch.Tensor) -> torch.Tensor:
    """``op`` on an input its leading ReLU has already been applied to."""
    _, dw, pw, bn = op
    return bn(pointwise_conv(pw, depthwise_conv(dw, x)))


def _preprocess(module: ReLUConvBN | FactorizedReduce, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, ReLUConvBN):
        activation, conv, bn = module
        return bn(pointwise_conv(conv, activation(x)))
    return module(x)


class SearchCell(nn.Module):
    def __init__(
        self,
        nodes: int,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool = False,
        pool_bn: bool = True,
    ):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_pp, C, affine=affine)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)
        self.edges = nn.ModuleList()
        for inputs in edge_inputs(nodes):
            for state in inputs:
                stride = 2 if reduction and state < 2 else 1
                self.edges.append(MixedOp(C, stride, affine, pool_bn))

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        states = [
            SharedInput(_preprocess(self.preprocess0, s0)),
            SharedInput(_preprocess(self.preprocess1, s1)),
        ]
        alive = mask.bool().tolist()
        offset = 0
        for inputs in edge_inputs(self.nodes):
            node = sum(
                self.edges[offset + i](
                    states[state].x, weights[offset + i], alive[offset + i], states[state]
                )
                for i, state in enumerate(inputs)
            )
            states.append(SharedInput(node))
            offset += len(inputs)
        return torch.cat([state.x for state in states[-self.nodes :]], dim=1)


class DartsSupernet(Supernet):
    def __init__(
        self,
        spec: SupernetSpec,
        stem_multiplier: int = 3,
        affine: bool = False,
        pool_bn: bool = True,
    ):
        super().__init__()
        self.spec = spec
        nodes, C = spec.nodes, spec.channels
        C_curr = stem_multiplier * C
        if spec.network_style == "imagenet":
            # ImageNet-sized inputs are brought down 4x before the first cell.
            self.stem = nn.Sequential(
                nn.Conv2d(spec.in_channels, C_curr, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
                nn.ReLU(),
                nn.Conv2d(C_curr, C_curr, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(spec.in_channels, C_curr, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(spec.cells):
            reduction = i in {spec.cells // 3, 2 * spec.cells // 3} and spec.cells >= 2
            if reduction:
                C_curr *= 2
            self.cells.append(
                SearchCell(nodes, C_pp, C_p, C_curr, reduction, reduction_prev, affine, pool_bn)
            )
            reduction_prev = reduction
            C_pp, C_p = C_p, nodes * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, spec.num_classes)
        n_edges = sum(len(inputs) for inputs in edge_inputs(nodes))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))
        # Committed keep/prune decisions per (edge, op); DARTS itself never prunes,
        # but a pruner plugin working on this space can.
        self.register_buffer("mask_normal", torch.ones(n_edges, len(PRIMITIVES)))
        self.register_buffer("mask_reduce", torch.ones(n_edges, len(PRIMITIVES)))

    def arch_parameters(self) -> list[torch.Tensor]:
        return [self.alphas_normal, self.alphas_reduce]

    def alphas(self, cell_type: str) -> torch.Tensor:
        return self.alphas_normal if cell_type == "normal" else self.alphas_reduce

    def mask(self, cell_type: str) -> torch.Tensor:
        return self.mask_normal if cell_type == "normal" else self.mask_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        weights = {t: F.softmax(self.alphas(t), dim=-1) for t in CELL_TYPES}
        for cell in self.cells:
            cell_type = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[cell_type], self.mask(cell_type))
        return self.classifier(self.global_pooling(s1).flatten(1))

    def unit_groups(self, granularity: str) -> list[UnitGroup]:
        if granularity != "operation":
            return []
        groups = []
        for cell_type in CELL_TYPES:
            weights = F.softmax(self.alphas(cell_type), dim=-1)
            offset = 0
            for node, inputs in enumerate(edge_inputs(self.spec.nodes)):
                rows = slice(offset, offset + len(inputs))
                groups.append(
                    UnitGroup(
                        key=f"{cell_type}/node{node + 2}",
                        granularity="operation",
                        scores=weights[rows],
                        mask=self.mask(cell_type)[rows],  # a view: pruners write through it
                        labels=PRIMITIVES,
                        meta={"cell_type": cell_type, "node": node + 2, "inputs": inputs},
                    )
                )
                offset += len(inputs)
        return groups


class DartsSearchSpace(SearchSpace):
    name = "darts"
    description = "DARTS cell space: 8 ops, 4 nodes, shared normal/reduce cells, softmax mixing"
    granularities = ("operation",)

    def build(self, spec: SupernetSpec, options: Mapping[str, Any]) -> DartsSupernet:
        return DartsSupernet(
            spec,
            affine=bool(options.get("search_affine", False)),
            pool_bn=bool(options.get("pool_bn", True)),
        )
