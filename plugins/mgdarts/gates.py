"""The hard gate of MG-DARTS: a step function with a Dynamic Sparse Training surrogate gradient.

Every discretization function of the search (ALGORITHM.md C.1) is ``H(score - threshold)``.
The step has zero gradient almost everywhere, so the backward pass substitutes the
piecewise-linear estimator of Dynamic Sparse Training (ALGORITHM.md B.3), which lets the
task loss reach both the scores and the learnable thresholds.
"""

from __future__ import annotations

from typing import Any

import torch

from mgas_bench.components import UnitGroup

# Breakpoints of the surrogate: a triangle of height 2 near zero, a plateau of 0.4 out
# to |z| = 1 (continuous at 0.4, since 2 - 4 * 0.4 = 0.4), and nothing beyond.
_PEAK_WIDTH = 0.4
_PLATEAU = 0.4
_SUPPORT = 1.0


def surrogate_gradient(z: torch.Tensor) -> torch.Tensor:
    """g(z) = 2 - 4|z| for |z| <= 0.4, 0.4 for 0.4 < |z| <= 1, 0 otherwise."""
    a = z.abs()
    plateau = torch.where(a <= _SUPPORT, torch.full_like(a, _PLATEAU), torch.zeros_like(a))
    return torch.where(a <= _PEAK_WIDTH, 2.0 - 4.0 * a, plateau)


class BinaryStep(torch.autograd.Function):
    """H(z) = 1 where z > 0 else 0, in the input's dtype; backward multiplies by g(z)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad_output * surrogate_gradient(z)


def binary_step(z: torch.Tensor) -> torch.Tensor:
    return BinaryStep.apply(z)


def threshold_gate(group: UnitGroup) -> torch.Tensor:
    """H(scores - threshold): the discretization function every MG-DARTS gate starts with.

    The supernet's gates call whatever discretizer the search hands them
    (:meth:`plugins.mgdarts.supernet.MGSupernet.use_discretizers`); this is the default,
    so a supernet built on its own behaves as the reference.
    """
    return binary_step(group.scores - group.meta["threshold"])
