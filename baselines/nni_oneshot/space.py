"""NNI's DARTS model space, sized from the suite's search budget and data set.

The hub space is CIFAR- or ImageNet-shaped (3 input channels, 10 or 1000 classes,
a choice of widths and depths to search). The suite fixes width and depth from
its budget, like every other method's supernet, and fits the stem and the
classifier to the data set; the cells, and so everything NNI searches, are NNI's.
Imports NNI: load this module only when the plugin is available.
"""

from __future__ import annotations

from nni.nas.hub.pytorch import DARTS
from torch import nn

from mgas_bench.components import SupernetSpec

NNI_NODES = 4  # fixed by NNI's DARTS space


class SizedDartsSpace(DARTS):
    """``nni.nas.hub.pytorch.DARTS`` with a fixed width and depth and the data set's shape."""

    def __init__(self, spec: SupernetSpec):
        if spec.nodes != NNI_NODES:
            raise ValueError(
                f"NNI's DARTS space has {NNI_NODES} intermediate nodes per cell; "
                f"the budget asks for nodes = {spec.nodes}"
            )
        super().__init__(width=spec.channels, num_cells=spec.cells, dataset=spec.network_style)
        if spec.network_style == "imagenet":
            first = self.stem0[0]
            self.stem0[0] = nn.Conv2d(
                spec.in_channels, first.out_channels, 3, stride=2, padding=1, bias=False
            )
        else:
            first = self.stem[0]
            self.stem[0] = nn.Conv2d(spec.in_channels, first.out_channels, 3, padding=1, bias=False)
        self.classifier = nn.Linear(self.classifier.in_features, spec.num_classes)
        self.num_labels = spec.num_classes
