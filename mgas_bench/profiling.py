"""Model size and cost measurements, independent of any search space.

Conventions follow the DARTS paper: parameter counts leave the auxiliary head out
(it is dropped after training) but include batch-norm affine parameters, and
"multiply-adds" count the multiply-accumulates of convolutions and linear layers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_EXCLUDE: tuple[str, ...] = ("auxiliary_head",)


def _counted(model: nn.Module, exclude_prefixes: tuple[str, ...]) -> Iterator[torch.Tensor]:
    for name, param in model.named_parameters():
        # Prefixes are module paths: "auxiliary_head" excludes "auxiliary_head.x"
        # but not a sibling that merely starts with the same letters.
        if not any(name == p or name.startswith(p + ".") for p in exclude_prefixes):
            yield param


def count_parameters(model: nn.Module, exclude_prefixes: tuple[str, ...] = DEFAULT_EXCLUDE) -> int:
    """Number of parameter elements outside the modules named by ``exclude_prefixes``."""
    return sum(p.numel() for p in _counted(model, exclude_prefixes))


def count_nonzero_parameters(
    model: nn.Module, exclude_prefixes: tuple[str, ...] = DEFAULT_EXCLUDE
) -> int:
    """Like :func:`count_parameters`, but only elements that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in _counted(model, exclude_prefixes))


# A module that masks its own weight keeps the 0/1 mask in a buffer of this name.
WEIGHT_MASK = "weight_mask"


def count_masked_out_parameters(
    model: nn.Module, exclude_prefixes: tuple[str, ...] = DEFAULT_EXCLUDE
) -> int:
    """Weights removed by masks: zeros of every ``weight_mask`` buffer outside the excluded modules.

    Counting mask zeros rather than zero weights keeps parameters that are merely
    zero at the moment (a fresh batch norm's bias) among the surviving ones.
    """
    total = 0
    for name, buffer in model.named_buffers():
        if name.rsplit(".", 1)[-1] != WEIGHT_MASK:
            continue
        if any(name.startswith(p + ".") for p in exclude_prefixes):
            continue
        total += int((buffer == 0).sum())
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single ``(C, H, W)`` image.

    Runs in eval mode, so training-only branches such as auxiliary heads are not
    counted; the model's training flag is restored afterwards.
    """
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    # FlopCounterMode counts a multiply-accumulate as two flops.
    return counter.get_total_flops() // 2
