"""MG-DARTS evaluation operations (ALGORITHM.md B.1 and G.2).

They differ from DARTS's in three ways: each op has its own channel counts (a
separable conv's middle width can differ from its ends), the depthwise and
pointwise convs of separable and dilated convs are :class:`MaskedConv2d` so
that weight-level pruning carries over, and pools are followed by an affine
batch norm. Every ReLU is out-of-place, because several ops read the same
state tensor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.profiling import WEIGHT_MASK
from plugins.mgdarts.genotype import KERNEL_SIZES, PRIMITIVES, channel_count


class MaskedConv2d(nn.Conv2d):
    """A bias-free conv whose forward uses ``weight * weight_mask``.

    The mask is a buffer (it moves with the module and is saved in its state
    dict, but no optimiser sees it), named as :mod:`mgas_bench.profiling`
    expects so surviving weights can be counted from it. Setting a mask also
    zeroes the masked weights: the gradient of ``weight * mask`` is zero there,
    so with weight decay and momentum acting on zeros they stay exactly zero,
    and counting non-zero parameters counts surviving weights.
    """

    weight_mask: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.register_buffer(WEIGHT_MASK, torch.ones_like(self.weight, requires_grad=False))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # nn.Conv2d.__init__ calls this before the mask buffer exists.
        mask = getattr(self, WEIGHT_MASK, None)
        if mask is not None:
            with torch.no_grad():
                self.weight.mul_(mask)

    def set_mask(self, mask: torch.Tensor) -> None:
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match the conv weight shape "
                f"{tuple(self.weight.shape)}"
            )
        mask = mask.detach().to(device=self.weight.device, dtype=self.weight.dtype)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("a weight mask may hold only 0 and 1")
        with torch.no_grad():
            self.weight_mask.copy_(mask)
            self.weight.mul_(self.weight_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.weight_mask, None)


class ReLUConvBN(nn.Sequential):
    """ReLU, 1x1 conv, batch norm: a cell's input preprocessing."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d

    def __init__(self, C_in: int, C_out: int) -> None:
        # Named children: channel shrinking in the search slices `conv` and `bn`.
        super().__init__(
            OrderedDict(
                relu=nn.ReLU(inplace=False),
                conv=nn.Conv2d(C_in, C_out, 1, bias=False),
                bn=nn.BatchNorm2d(C_out),
            )
        )


class SepConv(nn.Module):
    """DARTS's separable conv applied twice, with a free middle width.

    ReLU, depthwise kxk (strided), 1x1 to ``C_mid``, BN, ReLU, depthwise kxk,
    1x1 to ``C_out``, BN.
    """

    def __init__(self, C_in: int, C_mid: int, C_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.dw1 = MaskedConv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in)
        self.pw1 = MaskedConv2d(C_in, C_mid, 1)
        self.bn1 = nn.BatchNorm2d(C_mid)
        self.dw2 = MaskedConv2d(C_mid, C_mid, kernel_size, 1, padding, groups=C_mid)
        self.pw2 = MaskedConv2d(C_mid, C_out, 1)
        self.bn2 = nn.BatchNorm2d(C_out)

    def masked_convs(self) -> tuple[MaskedConv2d, ...]:
        """The convs that take ``[M_dw1, M_pw1, M_dw2, M_pw2]``, in that order."""
        return (self.dw1, self.pw1, self.dw2, self.pw2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pw1(self.dw1(F.relu(x))))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class DilConv(nn.Module):
    """ReLU, depthwise kxk conv with dilation 2 (strided), 1x1 conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        # Dilation 2 doubles the reach, so padding (k - 1) keeps the map size at stride 1.
        self.dw = MaskedConv2d(
            C_in, C_in, kernel_size, stride, kernel_size - 1, dilation=2, groups=C_in
        )
        self.pw = MaskedConv2d(C_in, C_out, 1)
        self.bn = nn.BatchNorm2d(C_out)

    def masked_convs(self) -> tuple[MaskedConv2d, ...]:
        """The convs that take ``[M_dw, M_pw]``, in that order."""
        return (self.dw, self.pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(F.relu(x))))


class PoolBN(nn.Sequential):
    """A 3x3 pool (padding 1) followed by an affine BN, as in the evaluation network."""

    def __init__(self, kind: str, C: int, stride: int) -> None:
        pool: nn.Module
        if kind == "avg":
            pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        elif kind == "max":
            pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            raise ValueError(f"unknown pool kind {kind!r}; expected 'avg' or 'max'")
        super().__init__(pool, nn.BatchNorm2d(C))


class Identity(nn.Module):
    """The stride-1 skip; cells exempt it from drop-path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FactorizedReduce(nn.Module):
    """Halves the map with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, got {C_out}")
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        # Padding the shifted view back to full size gives both halves the same shape on
        # odd maps; on even maps the padded row and column are never sampled.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, channels: Sequence[int], stride: int) -> nn.Module:
    """The evaluation module of one genotype op."""
    if name not in PRIMITIVES:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(PRIMITIVES)}")
    if len(channels) != channel_count(name):
        raise ValueError(f"{name} takes {channel_count(name)} channel counts, got {channels!r}")
    if name.startswith("sep_conv"):
        c_in, c_mid, c_out = channels
        return SepConv(c_in, c_mid, c_out, KERNEL_SIZES[name], stride)
    if name.startswith("dil_conv"):
        c_in, c_out = channels
        return DilConv(c_in, c_out, KERNEL_SIZES[name], stride)
    (width,) = channels
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(width, width)
    return PoolBN("avg" if name == "avg_pool_3x3" else "max", width, stride)


def op_masked_convs(op: nn.Module) -> tuple[MaskedConv2d, ...]:
    """The masked convs of any op, in official mask order; ``()`` for ops without."""
    if isinstance(op, SepConv | DilConv):
        return op.masked_convs()
    return ()
