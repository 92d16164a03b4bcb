"""Faster ways for the search supernet to compute the same candidates, mostly on CPU.

At the sizes the suite searches at (digits: 4 to 16 channels, 8x8 down to 2x2), three things
made the suite's DARTS search step slower than it needs to be:

- **Repeated parameter-free work.** Every candidate convolution begins with a ReLU of its
  edge's input, and a state feeds up to four edges, each with its own max and average pool
  of it. These depend only on the state (and a pool on its stride), so a cell computes each
  once per state with :class:`SharedInput` instead of once per edge and candidate.
- **oneDNN's dilated depthwise convolution.** Forward and backward, it is 1.2x to 2.8x slower
  on this CPU than a dense convolution with a block-diagonal weight that computes the same
  thing, up to 32 channels, although the dense one does ``channels`` times the multiply-adds
  (:func:`depthwise_conv`).
- **oneDNN's 1x1 convolution on small maps.** A batched matrix product computes it 2.6x to
  3.7x faster, forward and backward, up to 16 channels (:func:`pointwise_conv`).

Shared transforms apply on every device; the two convolution kernels on CPU only, at those
sizes: elsewhere, and on every GPU, the modules are called as they are. The README's
Performance section has the measurements. All three give the same values up to the order of
floating-point additions (shared transforms add their consumers' gradients before passing
them back, the dense convolution adds exact zeros, the matrix product sums in its own
order), so they change DARTS's search results in the last bits, not what it computes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

DENSE_DILATED_MAX_CHANNELS = 32
"""Up to this many channels, a CPU dilated depthwise convolution runs as a dense one (measured)."""


class SharedInput:
    """One cell state, and the parameter-free transforms of it that its edges' candidates share."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._done: dict[str, torch.Tensor] = {}

    def apply(self, transform: nn.Module) -> torch.Tensor:
        """``transform(self.x)``, computed the first time and reused by equal transforms after.

        ``transform`` must hold no parameters or state. Transforms are equal when their
        ``repr`` is, which for torch's activations and pools spells out every setting (a
        pool's stride, say), and stays right when a test or a plugin swaps an op's ReLU for
        another activation.
        """
        key = repr(transform)
        if key not in self._done:
            self._done[key] = transform(self.x)
        return self._done[key]


@functools.cache
def _block_diagonal(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(channels, device=device, dtype=dtype).view(channels, channels, 1, 1)


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``conv``, as a dense convolution where that is faster."""
    channels = conv.in_channels
    dense = (
        x.device.type == "cpu"
        and conv.dilation != (1, 1)
        and conv.groups == channels == conv.out_channels
        and channels <= DENSE_DILATED_MAX_CHANNELS
    )
    return dense_depthwise_conv(conv, x) if dense else conv(x)


def dense_depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``conv``, always as a dense convolution."""
    channels = conv.in_channels
    # weight[o, 0] placed at [o, o]: output channel o still reads only input channel o, and
    # the weight's gradient is the diagonal of the dense one.
    weight = conv.weight * _block_diagonal(channels, x.device, x.dtype)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation)


POINTWISE_MATMUL_MAX_CHANNELS = 16
"""Up to this many channels, a CPU 1x1 convolution runs as a matrix product (measured)."""


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``conv``: a matrix product where that is faster."""
    as_matmul = (
        x.device.type == "cpu"
        and x.is_contiguous()  # channels-last input keeps oneDNN's channels-last kernels
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
        and conv.bias is None
        and max(conv.in_channels, conv.out_channels) <= POINTWISE_MATMUL_MAX_CHANNELS
    )
    return bmm_pointwise_conv(conv, x) if as_matmul else conv(x)


def bmm_pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a stride-1, unpadded, bias-free 1x1 ``conv`` on a contiguous ``x``."""
    batch, _, height, width = x.shape
    # bmm on an expanded (not copied) weight: torch.matmul would fold the batch into the
    # rows, copying x transposed and keeping that copy for the backward pass (measured:
    # +15 MB peak on the digits supernet step over oneDNN's convolution, against +4 MB for bmm).
    weight = conv.weight.view(conv.out_channels, conv.in_channels)
    product = torch.bmm(
        weight.expand(batch, -1, -1), x.view(batch, conv.in_channels, height * width)
    )
    return product.view(batch, conv.out_channels, height, width)
