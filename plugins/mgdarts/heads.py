"""Classifier heads that close each stage's sub-network during multi-stage search.

The official heads hard-code 32x32 CIFAR pooling windows (ALGORITHM.md B.1); this
one pools adaptively, so a stage can end at any spatial size.
"""

from __future__ import annotations

import torch
from torch import nn


class StageHead(nn.Module):
    """ReLU, pool to at most 4x4, 1x1 conv to 128, conv to 256 over the pooled map, linear."""

    def __init__(self, C_in: int, num_classes: int, feature_size: int, pooled: int = 4):
        super().__init__()
        side = max(1, min(pooled, feature_size))
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(side),
            nn.Conv2d(C_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, side, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
