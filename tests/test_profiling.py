from __future__ import annotations

import torch
from torch import nn

from mgas_bench.profiling import count_masked_out_parameters, count_parameters


class MaskedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, keep: torch.Tensor):
        super().__init__(n_in, n_out, bias=True)
        self.register_buffer("weight_mask", keep.float())


def test_masked_out_weights_are_counted_from_masks_not_zero_values():
    keep = torch.ones(3, 4)
    keep[0, :3] = 0
    model = nn.Sequential(MaskedLinear(4, 3, keep), nn.BatchNorm1d(3))
    nn.init.zeros_(model[0].bias)  # zero-valued, yet not masked: still a surviving parameter
    model.auxiliary_head = MaskedLinear(3, 2, torch.zeros(2, 3))  # excluded like its params
    assert count_parameters(model) == 12 + 3 + 6
    assert count_masked_out_parameters(model) == 3
