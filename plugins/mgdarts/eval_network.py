"""The MG-DARTS CIFAR evaluation network (ALGORITHM.md G.2), built from a cell-wise genotype.

It follows the official ``cifar_train/model.py`` so that parameter counts agree,
with these deliberate differences (I.15 and I.18), none of which changes a
count for the released architectures:

* the channel count a cell hands downstream is the sum of the widths of the
  nodes it really concatenates; the official code sums all four node widths,
  which breaks when a node has no op;
* it works for any number of cells (the official one raises ``NameError`` for
  fewer than 6) and any input size: the auxiliary head pools adaptively when
  DARTS's fixed 5x5/3 pooling would not give the 2x2 map it expects;
* drop-path draws its mask on the input's device, not with ``torch.cuda``;
* a cell skips computing an input that no op reads (its preprocessing layer is
  still built and counted, as in the official network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from plugins.mgdarts.eval_ops import (
    FactorizedReduce,
    Identity,
    MaskedConv2d,
    ReLUConvBN,
    make_op,
    op_masked_convs,
)
from plugins.mgdarts.genotype import (
    INPUT_STATES,
    STATES,
    GeneOp,
    MGGenotype,
    active_nodes,
    auxiliary_position,
    node_widths,
    reduction_cells,
    validate_masks,
)

Masks = Sequence[Sequence[Sequence[torch.Tensor]]]


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the survivors."""
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x / keep_prob * mask


class MGCell(nn.Module):
    def __init__(
        self,
        genes: Sequence[GeneOp],
        concat: Sequence[int],
        C_prev_prev: int,
        C_prev: int,
        C_curr: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.widths = tuple(node_widths(genes, C_curr))
        if reduction_prev:
            if self.widths[0] % 2:
                raise ValueError(
                    f"input 0 follows a reduction cell, so FactorizedReduce needs it even, "
                    f"but it is {self.widths[0]} channels wide (C_curr={C_curr})"
                )
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, self.widths[0])
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, self.widths[0])
        self.preprocess1 = ReLUConvBN(C_prev, self.widths[1])

        self.ops = nn.ModuleList(
            make_op(g.op, g.channels, 2 if reduction and g.input < INPUT_STATES else 1)
            for g in genes
        )
        self.op_inputs = tuple(g.input for g in genes)
        # Ops grouped by the node they write, so nodes are summed in index order.
        self.node_ops = tuple(
            tuple(k for k, g in enumerate(genes) if g.output == node)
            for node in range(INPUT_STATES, STATES)
        )
        self.reads = frozenset(g.input for g in genes)
        written = active_nodes(genes)
        self.concat = tuple(node for node in concat if node in written)
        if not self.concat:
            raise ValueError(f"none of the concatenated nodes {list(concat)} has an op")
        self.out_channels = sum(self.widths[node] for node in self.concat)

    def masked_convs(self) -> list[tuple[MaskedConv2d, ...]]:
        return [op_masked_convs(op) for op in self.ops]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states: list[torch.Tensor | None] = [
            self.preprocess0(s0) if 0 in self.reads else None,
            self.preprocess1(s1) if 1 in self.reads else None,
        ]
        for op_indices in self.node_ops:
            total: torch.Tensor | None = None
            for k in op_indices:
                op = self.ops[k]
                h = op(states[self.op_inputs[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[node] for node in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary classifier: pool to 2x2, 1x1 conv to 128, 2x2 conv to 768."""

    def __init__(self, C: int, num_classes: int, feature_size: int) -> None:
        super().__init__()
        # DARTS's 5x5 stride-3 pooling gives 2x2 only on 7x7 and 8x8 maps.
        fixed_ok = feature_size >= 5 and (feature_size - 5) // 3 + 1 == 2
        pool: nn.Module = (
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
            if fixed_ok
            else nn.AdaptiveAvgPool2d(2)
        )
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _halve(size: int) -> int:
    # Every stride-2 op here (3x3/5x5 convs, dilated convs, pools, FactorizedReduce)
    # maps a side of s pixels to ceil(s / 2).
    return (size + 1) // 2


class MGNetworkCIFAR(nn.Module):
    """Stem, one cell per genotype cell, optional auxiliary head, GAP and linear classifier.

    The number of cells is that of the genotype; reduction cells sit at ``L//3``
    and ``2L//3``, where ``C_curr`` doubles (it sizes the stem-facing defaults,
    while the genotype's channels size the ops). ``masks`` is the official
    nested list ``[cell][op][conv]``, validated and applied at build time;
    ``None`` builds a dense network.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        genotype: MGGenotype,
        auxiliary: bool,
        in_channels: int = 3,
        input_size: int = 32,
        masks: Masks | None = None,
    ) -> None:
        super().__init__()
        if masks is not None:
            validate_masks(genotype, masks)
        self.genotype = genotype
        self.auxiliary = auxiliary
        self.drop_path_prob = 0.0
        layers = genotype.layers
        self.reductions = reduction_cells(layers)
        self.aux_position = auxiliary_position(layers)

        C_stem = 3 * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        self.cells = nn.ModuleList()
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        reduction_prev = False
        C_aux, aux_size, size = C_prev, input_size, input_size
        for i, genes in enumerate(genotype.cells):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
                size = _halve(size)
            try:
                cell = MGCell(
                    genes, genotype.concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev
                )
            except ValueError as exc:
                raise ValueError(f"cell {i}: {exc}") from None
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.out_channels
            if i == self.aux_position:
                C_aux, aux_size = C_prev, size
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(C_aux, num_classes, aux_size)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        if masks is not None:
            self.set_masks(masks)

    def masked_convs(self) -> list[list[tuple[MaskedConv2d, ...]]]:
        """``[cell][op]`` -> the op's masked convs, in the order of the official mask lists."""
        return [cell.masked_convs() for cell in self.cells]

    def set_masks(self, masks: Masks) -> None:
        validate_masks(self.genotype, masks)
        for cell_convs, cell_masks in zip(self.masked_convs(), masks, strict=True):
            for convs, op_masks in zip(cell_convs, cell_masks, strict=True):
                for conv, mask in zip(convs, op_masks, strict=True):
                    conv.set_mask(mask)

    def masks(self) -> list[list[list[torch.Tensor]]]:
        """The current masks, as CPU float tensors in the official nested layout."""
        return [
            [[conv.weight_mask.detach().float().cpu().clone() for conv in convs] for convs in cell]
            for cell in self.masked_convs()
        ]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, aux_logits
