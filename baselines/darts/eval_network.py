"""DARTS evaluation networks (CIFAR and ImageNet styles) built from a genotype.

The structure follows the DARTS release so that parameter counts match the paper;
two deliberate differences, neither of which changes a parameter count:

* all ReLUs are out-of-place (DARTS's in-place ReLUs in the auxiliary head and the
  ImageNet stem overwrite tensors that later cells still read);
* the auxiliary heads fall back to adaptive pooling when DARTS's fixed pooling
  would not give the 2x2 map their 2x2 convolution expects, so small inputs work.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.darts.genotype import Genotype
from baselines.darts.ops import OPS, FactorizedReduce, Identity, ReLUConvBN


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the survivors."""
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    # Out-of-place, unlike DARTS: ``x`` may be a tensor autograd saved for backward.
    return x / keep_prob * mask


class EvalCell(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        # After a reduction cell, s0 is twice the size of s1 and must be halved too.
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)

        edges = genotype.reduce if reduction else genotype.normal
        self.concat: tuple[int, ...] = (
            genotype.reduce_concat if reduction else genotype.normal_concat
        )
        self.indices: tuple[int, ...] = tuple(index for _, index in edges)
        self.steps = len(edges) // 2
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(self.steps):
            inputs = []
            for edge in (2 * step, 2 * step + 1):
                op = self.ops[edge]
                h = op(states[self.indices[edge]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                inputs.append(h)
            states.append(inputs[0] + inputs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


def _halve(size: int) -> int:
    # Every stride-2 layer in these networks (3x3 pad 1, 1x1 factorized) maps s to ceil(s/2).
    return (size + 1) // 2


class _AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier: pool to 2x2, 1x1 conv to 128, 2x2 conv to 768, linear."""

    def __init__(
        self,
        C: int,
        num_classes: int,
        feature_size: int,
        pool_stride: int,
        bn_after_768: bool,
    ) -> None:
        super().__init__()
        # DARTS pools with a fixed 5x5 window, which gives 2x2 only for the map size it
        # was written for (8x8 CIFAR, 7x7 ImageNet); any other size gets adaptive pooling.
        pooled = (feature_size - 5) // pool_stride + 1 if feature_size >= 5 else 0
        pool: nn.Module
        if pooled == 2:
            pool = nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        layers: list[nn.Module] = [
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        # DARTS's ImageNet head has no BN here (a typo kept for the paper's numbers).
        if bn_after_768:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _DartsNetwork(nn.Module):
    """The cell stack, heads and forward contract shared by both network styles."""

    drop_path_prob: float

    def _build_cells(
        self,
        genotype: Genotype,
        C: int,
        layers: int,
        C_stem: int,
        reduction_prev: bool,
    ) -> tuple[int, int]:
        """Build ``self.cells``; return the channels at the auxiliary position and at the end."""
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.layers = layers
        self.reductions = frozenset((layers // 3, 2 * layers // 3))
        self.aux_position = 2 * layers // 3
        self.cells = nn.ModuleList()
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        C_aux = C_prev
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            cell = EvalCell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_position:
                C_aux = C_prev
        return C_aux, C_prev

    def _aux_feature_size(self, stem_output_size: int) -> int:
        size = stem_output_size
        # Both reduction indices are at or before the auxiliary position.
        for _ in self.reductions:
            size = _halve(size)
        return size

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux_logits = None
        s0, s1 = self._stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, aux_logits


class NetworkCIFAR(_DartsNetwork):
    """DARTS's CIFAR network: stride-1 stem of 3C channels, then the cells."""

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        genotype: Genotype,
        in_channels: int = 3,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        self.auxiliary = auxiliary
        self.drop_path_prob = 0.0
        C_stem = 3 * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        C_aux, C_out = self._build_cells(genotype, C, layers, C_stem, reduction_prev=False)
        if auxiliary:
            self.auxiliary_head = _AuxiliaryHead(
                C_aux,
                num_classes,
                self._aux_feature_size(input_size),
                pool_stride=3,
                bn_after_768=True,
            )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_out, num_classes)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_DartsNetwork):
    """DARTS's ImageNet network: three stride-2 stem convs, so the first cell sees input/8."""

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        genotype: Genotype,
        in_channels: int = 3,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # s0 comes from stem0 and is twice the size of s1, hence reduction_prev=True.
        C_aux, C_out = self._build_cells(genotype, C, layers, C, reduction_prev=True)
        if auxiliary:
            stem_size = _halve(_halve(_halve(input_size)))
            self.auxiliary_head = _AuxiliaryHead(
                C_aux,
                num_classes,
                self._aux_feature_size(stem_size),
                pool_stride=2,
                bn_after_768=False,
            )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_out, num_classes)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
