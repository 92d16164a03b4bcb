"""Step-time benchmarks (run with `tox -e bench`, not with the unit tests).

One search step of each DARTS variant and one evaluation-network training step,
on the same tiny supernet, batch and input, so their ratios can be read off one
table. pytest-benchmark reports the timings; nothing here asserts a speed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.darts.eval_network import NetworkCIFAR
from baselines.darts.genotype import DARTS_V2
from baselines.darts.method import Architect, Darts
from baselines.darts.search_space import DartsSupernet
from mgas_bench.components import SupernetSpec

SPEC = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=4)
BATCH = 64


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 1, 8, 8, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


@pytest.mark.parametrize("second_order", [False, True], ids=["darts", "darts-2nd"])
def test_search_step(benchmark, second_order):
    torch.manual_seed(0)
    model = DartsSupernet(SPEC)
    options = Darts("darts", second_order).default_options()
    architect = Architect(model, options, second_order)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    train, valid = _batch(1), _batch(2)

    def step():
        architect.step(train, valid, 0.025, w_opt)
        w_opt.zero_grad()
        F.cross_entropy(model(train[0]), train[1]).backward()
        w_opt.step()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def test_eval_train_step(benchmark):
    torch.manual_seed(0)
    model = NetworkCIFAR(12, 10, 5, True, DARTS_V2, in_channels=1, input_size=8)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9)
    images, labels = _batch(3)

    def step():
        logits, aux = model(images)
        loss = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
