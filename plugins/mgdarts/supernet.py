"""The MG-DARTS supernet: L distinct cells gated at three granularities (ALGORITHM.md B, C).

Every cell owns its architecture tensors (no normal/reduce sharing):

* ``alpha`` (edges, ops): op scores, mixed with unnormalised sigmoid weights;
* ``t_op``, ``t_fil``, ``t_wt`` (edges, ops): one threshold triple per op instance;
* ``t_pre`` (2,): the filter thresholds of the two preprocess gates;
* ``op_mask`` (edges, ops) buffer: the committed op mask.

The filter scores ``beta`` and the committed filter / weight masks live in the ops that
they gate (:mod:`plugins.mgdarts.search_ops`). All scores and thresholds are registered
``nn.Parameter`` objects so optimisers can be rebuilt from the accessors, but they are
kept out of :meth:`MGSupernet.weight_parameters`.

Differences from the reference code, on purpose:

* R_op counts the gated ops of each node on the node's own edges (the reference reads
  node 3's edges for nodes 4 and 5, ALGORITHM.md I.1).
* Committed-off ops are excluded from every sum instead of being pushed to
  sigmoid(alpha - 10000) ~ 0; they are skipped in the forward pass, and alpha is left
  untouched, so regrowing an op needs no "+10000" restore.
* The size proxy puts the stride-2 skip term on the real reduction cells (the reference
  is off by one, ALGORITHM.md C.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mgas_bench.components import SearchSpace, Supernet, SupernetSpec, UnitGroup
from plugins.mgdarts import shrink as shrinking
from plugins.mgdarts.cell_gates import CellGates, gated_units
from plugins.mgdarts.gates import threshold_gate
from plugins.mgdarts.search_ops import (
    CONV_PRIMITIVES,
    PRIMITIVES,
    FilterGate,
    Preprocess,
    SearchOp,
    make_search_op,
)

GRANULARITIES: tuple[str, ...] = ("operation", "filter", "weight")


def edge_inputs(nodes: int) -> list[list[int]]:
    """For each intermediate node, the state indices its incoming edges read (in edge order)."""
    return [list(range(node + 2)) for node in range(nodes)]


def node_edge_slices(nodes: int) -> list[slice]:
    """The rows of the (edges, ops) tensors that belong to each intermediate node."""
    slices, start = [], 0
    for inputs in edge_inputs(nodes):
        slices.append(slice(start, start + len(inputs)))
        start += len(inputs)
    return slices


def reduction_cells(cells: int) -> frozenset[int]:
    """Reduction cells sit at L//3 and 2L//3, the first cells of stages 2 and 3 of the reference.

    They stay there whatever the number of stages, so a K-stage ablation changes
    only where sub-networks end, never the network itself (nor its evaluation twin,
    which places reductions the same way).
    """
    return frozenset({cells // 3, 2 * cells // 3})


def stage_ends(cells: int, stages: int) -> list[int]:
    """Last cell index of each of ``stages`` near-equal stages: (L=6, K=3) -> [1, 3, 5].

    Matches the reference's L//3 - 1 and 2L//3 - 1 for K = 3.
    """
    if not 1 <= stages <= cells:
        raise ValueError(f"need 1 <= stages <= cells, got {stages} stages for {cells} cells")
    return [(k + 1) * cells // stages - 1 for k in range(stages)]


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")


class MixedOp(nn.Module):
    """The seven candidates of one edge; the cell supplies their weights and thresholds."""

    def __init__(self, C: int, stride: int):
        super().__init__()
        self.stride = stride
        self.ops = nn.ModuleList(make_search_op(name, C, stride) for name in PRIMITIVES)

    def forward(
        self,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor],
        alive: list[bool],
        gates: CellGates,
    ) -> torch.Tensor | None:
        """Sum of ``weights[o] * op_o(x)`` over committed-alive ops; None if there are none.

        Ops whose dynamic gate is 0 still run: they add nothing, but their alpha and
        t_op get gradient through the surrogate (ALGORITHM.md B.3).
        """
        out = None
        for index, (op, keep) in enumerate(zip(self.ops, alive, strict=True)):
            if keep:
                term = weights[index] * op(x, gates)
                out = term if out is None else out + term
        return out


class MGCell(nn.Module):
    def __init__(
        self,
        nodes: int,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        granularities: frozenset[str],
    ):
        super().__init__()
        self.nodes, self.C, self.reduction = nodes, C, reduction
        self.gate_ops = "operation" in granularities
        self.gate_filters = "filter" in granularities
        self.gate_weights = "weight" in granularities
        # One discretization function per granularity, each called once per pass
        # (MGSupernet.use_discretizers replaces them).
        self.discretizers: dict[str, Callable[[UnitGroup], torch.Tensor]] = dict.fromkeys(
            ("operation", "filter", "weight"), threshold_gate
        )
        self.preprocess0 = Preprocess(C_pp, C, reduction_prev)
        self.preprocess1 = Preprocess(C_p, C, False)
        self.edge_inputs = edge_inputs(nodes)
        self.node_slices = node_edge_slices(nodes)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and state < 2 else 1)
            for inputs in self.edge_inputs
            for state in inputs
        )
        shape = (len(self.edges), len(PRIMITIVES))
        self.alpha = nn.Parameter(torch.zeros(shape))
        self.t_op = nn.Parameter(torch.zeros(shape))
        self.t_fil = nn.Parameter(torch.zeros(shape))
        self.t_wt = nn.Parameter(torch.zeros(shape))
        self.t_pre = nn.Parameter(torch.zeros(2))
        self.register_buffer("op_mask", torch.ones(shape))
        # Lookup tables for the per-node reductions, kept as buffers so they follow .to().
        node_of_edge = torch.cat(
            [torch.full((len(inputs),), n) for n, inputs in enumerate(self.edge_inputs)]
        )
        self.register_buffer("node_of_edge", node_of_edge, persistent=False)
        self.register_buffer(
            "node_of_unit", node_of_edge.repeat_interleave(len(PRIMITIVES)), persistent=False
        )
        conv_columns = torch.tensor([float(p in CONV_PRIMITIVES) for p in PRIMITIVES])
        self.register_buffer("conv_columns", conv_columns, persistent=False)

    # ---------------------------------------------------------------- op gates

    def op_gates(self) -> torch.Tensor:
        """m_o for every (edge, op): dynamic gate times committed mask, keep-one rule applied."""
        committed = self.op_mask
        if self.gate_ops:
            group = UnitGroup(
                "operations",
                "operation",
                torch.sigmoid(self.alpha),
                committed,
                PRIMITIVES,
                {"threshold": self.t_op},
            )
            gates = self.discretizers["operation"](group) * committed
        else:
            gates = committed
        return self._keep_one_per_node(gates)

    def _keep_one_per_node(self, gates: torch.Tensor) -> torch.Tensor:
        """Force the last committed-alive op of a node on when all its dynamic gates are 0.

        The reference walks the node's ops in (edge, op) order with a running sum S of
        sigmoid(alpha) over the ops not yet gated off, and forces an op on when its
        sigmoid(alpha) equals S. Since sigmoid > 0, that happens exactly at the node's
        last alive op, and only when every earlier op was gated off: the survivor is the
        last one in order, not the one with the largest score.
        """
        flat = gates.flatten()
        alive = self.op_mask.flatten() > 0
        on = (flat.detach() > 0) & alive
        node = self.node_of_unit
        on_per_node = torch.zeros(self.nodes, device=flat.device).index_add_(0, node, on.float())
        position = torch.arange(flat.numel(), device=flat.device)
        last_alive = torch.full((self.nodes,), -1, dtype=torch.long, device=flat.device)
        last_alive = last_alive.scatter_reduce(
            0, node, torch.where(alive, position, -1), reduce="amax"
        )
        force = alive & (position == last_alive[node]) & (on_per_node[node] == 0)
        return torch.where(force, torch.ones_like(flat), flat).view_as(gates)

    # ------------------------------------------------------------------ forward

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        alive = (self.op_mask > 0).tolist()
        gates = self.unit_gates(alive)
        states = [self.preprocess0(s0, gates), self.preprocess1(s1, gates)]
        # One unbind instead of one indexing op per candidate.
        weights = (torch.sigmoid(self.alpha) * self.op_gates()).unbind(0)
        rows = [w.unbind(0) for w in weights]
        edge = 0
        for inputs in self.edge_inputs:
            node_out = None
            for state in inputs:
                out = self.edges[edge](states[state], rows[edge], alive[edge], gates)
                if out is not None:
                    node_out = out if node_out is None else node_out + out
                edge += 1
            states.append(self._empty_node(states[1]) if node_out is None else node_out)
        return torch.cat(states[2:], dim=1)

    def _empty_node(self, s1: torch.Tensor) -> torch.Tensor:
        """A node whose ops were all committed off (only reachable by writing masks directly)."""
        n, c, h, w = s1.shape
        if self.reduction:
            h, w = (h + 1) // 2, (w + 1) // 2
        return s1.new_zeros(n, c, h, w)

    def unit_gates(self, alive: list[list[bool]]) -> CellGates:
        """Filter and weight gates of the preprocess gates and the ``alive`` ops, in one go."""
        n_ops = len(PRIMITIVES)
        ops = [
            (edge * n_ops + index, self.edges[edge].ops[index])
            for edge, row in enumerate(alive)
            for index, keep in enumerate(row)
            if keep
        ]
        units = gated_units([self.preprocess0.gate, self.preprocess1.gate], ops, self.alpha.device)
        return CellGates(
            units,
            torch.cat([self.t_pre, self.t_fil.flatten()]),
            self.t_wt.flatten(),
            self.discretizers["filter"] if self.gate_filters else None,
            self.discretizers["weight"] if self.gate_weights else None,
        )

    # ------------------------------------------------------------------- losses

    def threshold_regulariser(self) -> torch.Tensor:
        """R_thr of this cell: exp(-t) over the thresholds of committed-alive ops (C.2)."""
        alive = self.op_mask
        conv_alive = alive * self.conv_columns
        total = self.alpha.new_zeros(())
        if self.gate_ops:
            total = total + (torch.exp(-self.t_op) * alive).sum()
        if self.gate_filters:
            total = total + torch.exp(-self.t_pre).sum()
            total = total + (torch.exp(-self.t_fil) * conv_alive).sum()
        if self.gate_weights:
            total = total + (torch.exp(-self.t_wt) * conv_alive).sum()
        return total

    def op_sparsity(self) -> torch.Tensor:
        """R_op of this cell: sum over gated-on ops of log(1 + n_node * sigma(alpha) / S_node).

        S_node sums sigma(alpha) over the node's committed-alive ops (the reference sums
        all candidates, with pruned ones at sigma(alpha - 10000) ~ 0); n_node counts the
        node's ops whose gate is on, on its own edges (fixing I.1). Which ops count is a
        hard selection, as in the reference: no gradient flows through it.
        """
        score = torch.sigmoid(self.alpha)
        selected = (self.op_gates().detach() > 0).to(score.dtype)
        node = self.node_of_edge
        S_node = score.new_zeros(self.nodes).index_add(0, node, (score * self.op_mask).sum(1))
        n_node = score.new_zeros(self.nodes).index_add(0, node, selected.sum(1))
        # A node with nothing alive selects nothing; the clamp only keeps its terms finite.
        ratio = score / S_node[node].clamp_min(1e-12)[:, None]
        return (torch.log1p(n_node[node][:, None] * ratio) * selected).sum()

    def size_proxy(self) -> torch.Tensor:
        """Parameter count of committed-alive ops under the C.4 proxy (not in millions)."""
        total = self.alpha.new_zeros(())
        for edge, op in self.alive_ops():
            total = total + self.op(edge, op).size_proxy()
        return total

    # -------------------------------------------------------------------- units

    def op(self, edge: int, op: int) -> SearchOp:
        return self.edges[edge].ops[op]

    def alive_ops(self) -> list[tuple[int, int]]:
        return [(edge, op) for edge, op in (self.op_mask > 0).nonzero().tolist()]

    def op_channels(self, edge: int, op: int) -> list[int]:
        """The genotype ``channels`` list of one op instance at the cell's current width."""
        return self.op(edge, op).channels(self.C)

    def preprocess_gates(self) -> list[tuple[FilterGate, torch.Tensor]]:
        return [(self.preprocess0.gate, self.t_pre[0]), (self.preprocess1.gate, self.t_pre[1])]

    @torch.no_grad()
    def commit(self) -> dict[str, int]:
        """Make the dynamic gates permanent; return the units newly pruned per granularity."""
        before = int(self.op_mask.sum())
        self.op_mask.copy_(self.op_gates())
        pruned = {"operation": before - int(self.op_mask.sum()), "filter": 0, "weight": 0}
        # Ops pruned just now keep their old filter / weight masks: they no longer run, and
        # a regrown op starts from all-ones masks anyway.
        gates = self.unit_gates((self.op_mask > 0).tolist())
        for gate, hard in gates.filter_hard().items():
            pruned["filter"] += _committed(gate.filter_mask, hard)
        for conv, hard in gates.weight_hard().items():
            pruned["weight"] += _committed(conv.weight_mask, hard)
        return pruned


def _committed(mask: torch.Tensor, gate: torch.Tensor) -> int:
    """Write a hard gate into a committed mask; return how many units it newly pruned."""
    before = int(mask.sum())
    mask.copy_(gate)
    return before - int(mask.sum())


class MGSupernet(Supernet):
    """Stem, L distinct MG-DARTS cells and a GAP + linear classifier (CIFAR-style only).

    ``forward(x, upto)`` runs the stem and cells ``0..upto`` and returns that cell's
    feature map, so a stage's sub-network never touches later cells; heads are separate
    (:meth:`classify` for the full network, the method's own heads for earlier stages).
    """

    def __init__(
        self,
        spec: SupernetSpec,
        granularities: Iterable[str] = GRANULARITIES,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        if spec.network_style != "cifar":
            raise NotImplementedError(
                f"the MG-DARTS supernet supports network_style 'cifar' only, got "
                f"{spec.network_style!r}: the ImageNet stem is not implemented yet"
            )
        granularities = frozenset(granularities)
        for granularity in granularities:
            _check_granularity(granularity)
        if spec.cells < 1:
            raise ValueError(f"need at least one cell, got {spec.cells}")
        self.spec = spec
        self.granularities = granularities
        self.reductions = reduction_cells(spec.cells)
        nodes, C_curr = spec.nodes, stem_multiplier * spec.channels
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_pp, C_p, C_curr = C_curr, C_curr, spec.channels
        self.cells = nn.ModuleList()
        self._cell_channels: list[int] = []
        reduction_prev = False
        for i in range(spec.cells):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            self.cells.append(
                MGCell(nodes, C_pp, C_p, C_curr, reduction, reduction_prev, granularities)
            )
            reduction_prev = reduction
            C_pp, C_p = C_p, nodes * C_curr
            self._cell_channels.append(C_p)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, spec.num_classes)

    @classmethod
    def from_options(cls, spec: SupernetSpec, options: Mapping[str, Any]) -> MGSupernet:
        """Options: ``granularities`` (subset of operation/filter/weight), ``stem_multiplier``."""
        return cls(
            spec,
            granularities=options.get("granularities", GRANULARITIES),
            stem_multiplier=int(options.get("stem_multiplier", 3)),
        )

    # ---------------------------------------------------------------- structure

    @property
    def num_cells(self) -> int:
        return len(self.cells)

    def stage_ends(self, stages: int) -> list[int]:
        return stage_ends(self.num_cells, stages)

    def cell_out_channels(self, cell: int) -> int:
        return self._cell_channels[self._cell_index(cell)]

    def cell_out_size(self, cell: int) -> int:
        """Spatial side of cell ``cell``'s output for a ``spec.input_size`` input."""
        size = self.spec.input_size
        for i in range(self._cell_index(cell) + 1):
            if i in self.reductions:
                size = (size + 1) // 2
        return size

    def _cell_index(self, cell: int) -> int:
        if not 0 <= cell < self.num_cells:
            raise IndexError(f"cell {cell} out of range 0..{self.num_cells - 1}")
        return cell

    def _upto(self, upto: int | None) -> int:
        return self.num_cells - 1 if upto is None else self._cell_index(upto)

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Feature map after cell ``upto`` (default: the last cell); later cells do not run."""
        last = self._upto(upto)
        s0 = s1 = self.stem(x)
        for cell in self.cells[: last + 1]:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pooling(features).flatten(1))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward(x))

    # --------------------------------------------------------------- parameters

    def _cells_upto(self, upto: int | None) -> list[MGCell]:
        return list(self.cells[: self._upto(upto) + 1])

    def alpha_parameters(self, upto: int | None = None) -> list[nn.Parameter]:
        return [cell.alpha for cell in self._cells_upto(upto)]

    def beta_parameters(self, upto: int | None = None) -> list[nn.Parameter]:
        return [
            module.beta
            for cell in self._cells_upto(upto)
            for module in cell.modules()
            if isinstance(module, FilterGate)
        ]

    def threshold_parameters(self, granularity: str, upto: int | None = None) -> list[nn.Parameter]:
        """t_op ('operation'), t_fil and t_pre ('filter') or t_wt ('weight') of each cell."""
        _check_granularity(granularity)
        params: list[nn.Parameter] = []
        for cell in self._cells_upto(upto):
            if granularity == "operation":
                params.append(cell.t_op)
            elif granularity == "filter":
                params.extend([cell.t_fil, cell.t_pre])
            else:
                params.append(cell.t_wt)
        return params

    def arch_parameters(self) -> list[torch.Tensor]:
        thresholds = [p for g in GRANULARITIES for p in self.threshold_parameters(g)]
        return [*self.alpha_parameters(), *self.beta_parameters(), *thresholds]

    def weight_parameters(self) -> list[torch.Tensor]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def use_discretizers(
        self, discretizers: Mapping[str, Callable[[UnitGroup], torch.Tensor]]
    ) -> None:
        """Gate each granularity's units with the given discretization function from now on.

        Each cell calls a granularity's function once per pass, on all its units of that
        granularity (:mod:`plugins.mgdarts.cell_gates`). Granularities left out keep
        their current function.
        """
        unknown = set(discretizers) - set(GRANULARITIES)
        if unknown:
            raise ValueError(
                f"no native gates for granularit{'ies' if len(unknown) > 1 else 'y'} "
                f"{sorted(unknown)}; the supernet gates {', '.join(GRANULARITIES)}"
            )
        for cell in self.cells:
            cell.discretizers.update(discretizers)

    @torch.no_grad()
    def reset_thresholds(
        self,
        operation: float = 0.0,
        filter: float = 0.0,
        weight: float = 0.0,
        upto: int | None = None,
    ) -> None:
        """Set thresholds in place (stage starts, ALGORITHM.md C.1); Parameter identity is kept.

        Optimiser state (momentum) of the thresholds is not touched: rebuild the optimisers.
        """
        for granularity, value in zip(GRANULARITIES, (operation, filter, weight), strict=True):
            for param in self.threshold_parameters(granularity, upto):
                param.fill_(value)

    # ------------------------------------------------------------------- losses

    def threshold_regulariser(self, upto: int | None = None) -> torch.Tensor:
        """R_thr over cells 0..upto (cumulative over earlier stages, ALGORITHM.md C.2)."""
        return torch.stack([cell.threshold_regulariser() for cell in self._cells_upto(upto)]).sum()

    def op_sparsity(self, cells: Iterable[int]) -> torch.Tensor:
        """R_op over exactly the given cells (a stage's own cells, or all in the global phase)."""
        terms = [self.cells[self._cell_index(i)].op_sparsity() for i in cells]
        if not terms:
            return self.cells[0].alpha.new_zeros(())
        return torch.stack(terms).sum()

    @torch.no_grad()
    def size_proxy(self, upto: int | None = None) -> float:
        """Model-size proxy of cells 0..upto in millions of parameters (ALGORITHM.md C.4)."""
        total = torch.stack([cell.size_proxy() for cell in self._cells_upto(upto)]).sum()
        return float(total) * 1e-6

    # ------------------------------------------------------------- op bookkeeping

    def op_gates(self, cell: int) -> torch.Tensor:
        """Current op gates m_o of one cell, (edges, ops), differentiable."""
        return self.cells[self._cell_index(cell)].op_gates()

    @torch.no_grad()
    def commit(self, upto: int | None = None) -> dict[str, int]:
        """Turn the dynamic gates of cells 0..upto into committed masks (all granularities).

        New mask = old mask * dynamic gate; every node keeps at least one op. Returns how
        many units each granularity newly lost.
        """
        pruned = dict.fromkeys(GRANULARITIES, 0)
        for cell in self._cells_upto(upto):
            for granularity, count in cell.commit().items():
                pruned[granularity] += count
        return pruned

    def alive_ops(self, cell: int) -> list[tuple[int, int]]:
        """Committed-alive (edge, op index) pairs of a cell, edge-major."""
        return self.cells[self._cell_index(cell)].alive_ops()

    def op_alive(self, cell: int, edge: int, op: int) -> bool:
        return bool(self.cells[self._cell_index(cell)].op_mask[edge, op] > 0)

    def num_alive_ops(self, upto: int | None = None) -> int:
        return int(sum(int(cell.op_mask.sum()) for cell in self._cells_upto(upto)))

    @torch.no_grad()
    def set_op_alive(self, cell: int, edge: int, op: int, alive: bool) -> None:
        self.cells[self._cell_index(cell)].op_mask[edge, op] = float(alive)

    @torch.no_grad()
    def regrow(self, cell: int, edge: int, op: int) -> None:
        """Bring a pruned op back as the reference does: fresh weights, beta 0, all-ones masks.

        Its alpha is left as it was (it was never offset), and Parameter identity is kept,
        so optimisers stay valid, though their state for these tensors is stale.
        """
        self.set_op_alive(cell, edge, op, True)
        self.cells[self._cell_index(cell)].op(edge, op).reset_parameters()

    def shrink(self, upto: int) -> shrinking.ShrinkReport:
        """Physically narrow cells 0..upto to one uniform width each (ALGORITHM.md D.5).

        See :func:`plugins.mgdarts.shrink.shrink`. Modules and Parameters of the shrunk
        cells (and the input side of the next two cells and the classifier) are
        replaced: rebuild optimisers and any head that reads a shrunk cell afterwards.
        The cells stay, and so do their discretizers.
        """
        return shrinking.shrink(self, upto)

    # -------------------------------------------------------------- unit groups

    def unit_groups(self, granularity: str) -> list[UnitGroup]:
        """Units for the host; a disabled or unknown granularity gives ``[]``.

        Masks are views of the committed masks, so writing into ``group.mask`` prunes.
        """
        if granularity not in self.granularities:
            return []
        build = {
            "operation": self._operation_groups,
            "filter": self._filter_groups,
            "weight": self._weight_groups,
        }[granularity]
        return [group for i, cell in enumerate(self.cells) for group in build(i, cell)]

    def _operation_groups(self, i: int, cell: MGCell) -> list[UnitGroup]:
        scores = torch.sigmoid(cell.alpha)
        return [
            UnitGroup(
                key=f"cell{i}/node{node + 2}",
                granularity="operation",
                scores=scores[rows],
                mask=cell.op_mask[rows],
                labels=PRIMITIVES,
                meta={
                    "cell": i,
                    "node": node + 2,
                    "inputs": cell.edge_inputs[node],
                    "edges": list(range(rows.start, rows.stop)),
                    "threshold": cell.t_op[rows],
                },
            )
            for node, rows in enumerate(cell.node_slices)
        ]

    def _filter_groups(self, i: int, cell: MGCell) -> list[UnitGroup]:
        groups = [
            _filter_group(f"cell{i}/preprocess{k}", gate, i, None, None, f"preprocess{k}", t)
            for k, (gate, t) in enumerate(cell.preprocess_gates())
        ]
        for edge, mixed in enumerate(cell.edges):
            for index, op in enumerate(mixed.ops):
                for position, gate in op.filter_gates().items():
                    threshold = cell.t_fil[edge, index] if gate.thresholded else None
                    key = f"cell{i}/edge{edge}/{PRIMITIVES[index]}/{position}"
                    groups.append(_filter_group(key, gate, i, edge, index, position, threshold))
        return groups

    def _weight_groups(self, i: int, cell: MGCell) -> list[UnitGroup]:
        groups = []
        for edge, mixed in enumerate(cell.edges):
            for index, op in enumerate(mixed.ops):
                for k, conv in enumerate(op.masked_convs()):
                    groups.append(
                        UnitGroup(
                            key=f"cell{i}/edge{edge}/{PRIMITIVES[index]}/conv{k}",
                            granularity="weight",
                            scores=conv.weight.detach().abs(),
                            mask=conv.weight_mask,
                            meta={
                                "cell": i,
                                "edge": edge,
                                "op": index,
                                "op_name": PRIMITIVES[index],
                                "conv": k,
                                "threshold": cell.t_wt[edge, index],
                            },
                        )
                    )
        return groups


def _filter_group(
    key: str,
    gate: FilterGate,
    cell: int,
    edge: int | None,
    op: int | None,
    position: str,
    threshold: torch.Tensor | None,
) -> UnitGroup:
    """One gated channel group; ``threshold`` is None where the gate has none (I.10)."""
    return UnitGroup(
        key=key,
        granularity="filter",
        scores=torch.sigmoid(gate.beta),
        mask=gate.filter_mask,
        meta={
            "cell": cell,
            "edge": edge,
            "op": op,
            "op_name": None if op is None else PRIMITIVES[op],
            "position": position,
            "threshold": threshold,
        },
    )


class MGDartsSearchSpace(SearchSpace):
    """The MG-DARTS cell space as a host component (registration is up to the plugin)."""

    name = "mgdarts"
    description = (
        "MG-DARTS cell space: 7 ops, 4 nodes, L distinct cells, sigmoid op scores gated "
        "at operation, filter and weight granularity"
    )
    granularities = GRANULARITIES

    def build(self, spec: SupernetSpec, options: Mapping[str, Any]) -> MGSupernet:
        return MGSupernet.from_options(spec, options)
