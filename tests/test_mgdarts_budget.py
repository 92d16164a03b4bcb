"""MG-DARTS spends the same search budget as the other methods: rounds share its batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from plugins.mgdarts.budget import interleaved, plan_rounds, round_batches


@pytest.mark.parametrize(
    ("epochs", "phases", "regrowth", "rounds_per_phase", "rounds"),
    [
        (4, 4, 2, 2, 10),  # the small budget: 3 stages + global phase, 2 regrowths
        (50, 4, 2, 12, 50),  # the paper budget: every round is one full pass
        (1, 1, 0, 2, 2),
        (20, 2, 1, 10, 21),
    ],
)
def test_rounds_never_read_more_than_the_budget(epochs, phases, regrowth, rounds_per_phase, rounds):
    plan = plan_rounds(epochs, 19, phases, regrowth)
    assert (plan.rounds_per_phase, plan.rounds) == (rounds_per_phase, rounds)
    assert plan.rounds * plan.batches_per_round <= epochs * 19
    assert plan.data_epochs(19) <= epochs
    # Within one round's worth of the budget: nothing wasted but the division's remainder.
    assert (plan.rounds + 1) * plan.batches_per_round > epochs * 19


def test_every_round_gets_a_batch_even_on_a_tiny_budget():
    plan = plan_rounds(epochs=1, batches_per_epoch=3, phases=4, regrowth_rounds=2)
    assert plan.rounds == 10 and plan.batches_per_round == 1


def test_plan_rounds_refuses_no_phases():
    with pytest.raises(ValueError, match="at least one phase"):
        plan_rounds(4, 10, 0, 0)


def test_interleaved_alternates_then_finishes_the_longer():
    assert list(interleaved([1, 2, 3], ["a"])) == [1, "a", 2, 3]
    assert list(interleaved([], [])) == []


def _loader(values: list[int], seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.tensor(values))
    return DataLoader(data, batch_size=1, shuffle=True, generator=generator)


def test_a_round_reads_both_splits_and_runs_on_into_new_passes():
    weights, arch = _loader([0, 1, 2], 0), _loader([10, 11], 1)
    first = [int(b[0]) for b in round_batches(weights, arch, 4)]
    # Alternating, so a partial pass sees both splits.
    assert [v >= 10 for v in first] == [False, True, False, True]
    longer = [int(b[0]) for b in round_batches(weights, arch, 12)]
    # Five batches a pass: two whole passes, then two batches of a third.
    assert sorted(longer[:5]) == sorted(longer[5:10]) == [0, 1, 2, 10, 11]
    assert len(longer) == 12


def test_round_batches_stops_on_empty_loaders():
    assert list(round_batches([], [], 5)) == []
