"""The seven candidate operations of the MG-DARTS search space, with their gated units.

Follows ALGORITHM.md B.1-B.3. Every op is called as ``op(x, gates)``, where ``gates``
(:class:`plugins.mgdarts.cell_gates.CellGates`) holds the values its cell computed for
all of its gated units at once, so no op evaluates a gate of its own:

* Filter gates sit after a batch norm and scale each channel by ``sigmoid(beta) * m_f``
  with ``m_f = H(sigmoid(beta) - t_fil) * M_f`` (``M_f`` the committed mask).
* Weight gates: each sep/dil conv uses ``W * m_w`` with ``m_w = H(|W| - t_wt) * M_w``;
  ``M_w`` lives in the conv's ``weight_mask`` buffer (the host counts surviving weights
  from buffers of that name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.profiling import WEIGHT_MASK
from plugins.mgdarts.eval_ops import FactorizedReduce, ReLUConvBN
from plugins.mgdarts.genotype import PRIMITIVES

if TYPE_CHECKING:
    from plugins.mgdarts.cell_gates import CellGates

# Ops that carry weight-level units and the t_fil / t_wt regulariser terms.
CONV_PRIMITIVES: frozenset[str] = frozenset(p for p in PRIMITIVES if "conv" in p)


class FilterGate(nn.Module):
    """The filter scores and committed mask of one gated channel group.

    ``thresholded=False`` is the FactorizedReduce skip inside a mixed op, which the
    reference scales by ``sigmoid(beta) * M_f`` without a threshold (ALGORITHM.md I.10).
    """

    def __init__(self, channels: int, thresholded: bool = True):
        super().__init__()
        self.thresholded = thresholded
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("filter_mask", torch.ones(channels))

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return x * gates.scale(self)[None, :, None, None]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.beta.zero_()
        self.filter_mask.fill_(1.0)


class MaskedConv2d(nn.Conv2d):
    """A bias-free conv whose weights pass through the weight-level gate."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
    ):
        super().__init__(
            C_in, C_out, kernel_size, stride, padding, dilation, groups=groups, bias=False
        )
        self.register_buffer(WEIGHT_MASK, torch.ones_like(self.weight))

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return self._conv_forward(x, gates.weight(self), None)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # nn.Conv2d.__init__ calls this before the buffer exists.
        if hasattr(self, WEIGHT_MASK):
            with torch.no_grad():
                getattr(self, WEIGHT_MASK).fill_(1.0)


class SearchOp(nn.Module):
    """A candidate op; subclasses expose their gates for commits, regrowth and unit groups."""

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        raise NotImplementedError

    def filter_gates(self) -> dict[str, FilterGate]:
        """Gated channel groups by position ("mid", "out"), in forward order."""
        return {}

    def masked_convs(self) -> list[MaskedConv2d]:
        return []

    def size_proxy(self) -> torch.Tensor | int:
        """Parameter count of the model-size proxy (ALGORITHM.md C.4); 0 for parameter-free ops."""
        return 0

    def channels(self, width: int) -> list[int]:
        """The op's ``channels`` list in the official genotype, on a ``width``-channel cell.

        Pools and identity hold no weights, so they report the cell width they are given;
        ops with convolutions report their own module widths and ignore ``width``.
        """
        return [width]

    def reset_parameters(self) -> None:
        """Fresh weights, zero scores and all-ones masks, as a regrown op gets (ALGORITHM.md E)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()


class SepConv(SearchOp):
    """(ReLU, depthwise k x k, 1x1, BN, gate) twice; the first depthwise carries the stride."""

    def __init__(
        self,
        C_in: int,
        C_mid: int,
        C_out: int,
        kernel_size: int,
        stride: int,
    ):
        super().__init__()
        pad = kernel_size // 2
        self.dw1 = MaskedConv2d(C_in, C_in, kernel_size, stride, pad, groups=C_in)
        self.pw1 = MaskedConv2d(C_in, C_mid, 1)
        self.bn1 = nn.BatchNorm2d(C_mid)
        self.gate_mid = FilterGate(C_mid)
        self.dw2 = MaskedConv2d(C_mid, C_mid, kernel_size, 1, pad, groups=C_mid)
        self.pw2 = MaskedConv2d(C_mid, C_out, 1)
        self.bn2 = nn.BatchNorm2d(C_out)
        self.gate_out = FilterGate(C_out)

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        x = self.pw1(self.dw1(F.relu(x), gates), gates)
        x = self.gate_mid(self.bn1(x), gates)
        x = self.pw2(self.dw2(F.relu(x), gates), gates)
        return self.gate_out(self.bn2(x), gates)

    def filter_gates(self) -> dict[str, FilterGate]:
        return {"mid": self.gate_mid, "out": self.gate_out}

    def size_proxy(self) -> torch.Tensor:
        # Filter masks count, weight masks do not: the reference proxy ignores them.
        mid = self.gate_mid.filter_mask.sum()
        out = self.gate_out.filter_mask.sum()
        per_mid = self.pw1.weight[0].numel() + self.dw2.weight[0].numel()
        return self.dw1.weight.numel() + per_mid * mid + self.pw2.weight[0].numel() * out

    def masked_convs(self) -> list[MaskedConv2d]:
        return [self.dw1, self.pw1, self.dw2, self.pw2]

    def channels(self, width: int) -> list[int]:
        return [self.dw1.in_channels, self.pw1.out_channels, self.pw2.out_channels]


class DilConv(SearchOp):
    """ReLU, depthwise k x k with dilation 2, 1x1, BN, gate."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
    ):
        super().__init__()
        dilation = 2
        pad = dilation * (kernel_size // 2)
        self.dw = MaskedConv2d(C_in, C_in, kernel_size, stride, pad, dilation, groups=C_in)
        self.pw = MaskedConv2d(C_in, C_out, 1)
        self.bn = nn.BatchNorm2d(C_out)
        self.gate_out = FilterGate(C_out)

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        x = self.pw(self.dw(F.relu(x), gates), gates)
        return self.gate_out(self.bn(x), gates)

    def filter_gates(self) -> dict[str, FilterGate]:
        return {"out": self.gate_out}

    def masked_convs(self) -> list[MaskedConv2d]:
        return [self.dw, self.pw]

    def channels(self, width: int) -> list[int]:
        return [self.dw.in_channels, self.pw.out_channels]

    def size_proxy(self) -> torch.Tensor:
        return self.dw.weight.numel() + self.pw.weight[0].numel() * self.gate_out.filter_mask.sum()


class Pool(SearchOp):
    """3x3 pooling with padding 1; no batch norm in the search space (ALGORITHM.md B.1)."""

    def __init__(self, kind: str, stride: int):
        super().__init__()
        if kind == "avg":
            self.pool: nn.Module = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        elif kind == "max":
            self.pool = nn.MaxPool2d(3, stride, padding=1)
        else:
            raise ValueError(f"unknown pool kind {kind!r}; expected 'avg' or 'max'")

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return self.pool(x)


class Identity(SearchOp):
    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return x


class SkipReduce(SearchOp):
    """``skip_connect`` on a stride-2 edge: FactorizedReduce with an unthresholded gate."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.reduce = FactorizedReduce(C_in, C_out)
        self.gate_out = FilterGate(C_out, thresholded=False)

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return self.gate_out(self.reduce(x), gates)

    def filter_gates(self) -> dict[str, FilterGate]:
        return {"out": self.gate_out}

    def size_proxy(self) -> int:
        # The reference counts c^2 for a stride-2 skip (its two convs hold c_in * c/2 each).
        return self.reduce.conv_1.in_channels * self.reduce.bn.num_features

    def channels(self, width: int) -> list[int]:
        return [self.reduce.conv_1.in_channels]


class Preprocess(nn.Module):
    """A cell input's 1x1 ReLU-Conv-BN (or FactorizedReduce) followed by a thresholded gate."""

    def __init__(self, C_in: int, C_out: int, reduce: bool):
        super().__init__()
        self.op: nn.Module = FactorizedReduce(C_in, C_out) if reduce else ReLUConvBN(C_in, C_out)
        self.gate = FilterGate(C_out)

    def forward(self, x: torch.Tensor, gates: CellGates) -> torch.Tensor:
        return self.gate(self.op(x), gates)


def make_search_op(name: str, C: int, stride: int) -> SearchOp:
    """Build candidate ``name`` on a C-channel edge; all widths equal C before any shrink."""
    if name == "skip_connect":
        return Identity() if stride == 1 else SkipReduce(C, C)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(C, C, C, k, stride)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(C, C, k, stride)
    if name in ("avg_pool_3x3", "max_pool_3x3"):
        return Pool(name[:3], stride)
    raise ValueError(f"unknown primitive {name!r}; known: {', '.join(PRIMITIVES)}")
