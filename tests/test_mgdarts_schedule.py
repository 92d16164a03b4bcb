"""The adaptive λ schedule, regrowth sampling and stage heads of MG-DARTS."""

from __future__ import annotations

import pytest
import torch

from plugins.mgdarts.heads import StageHead
from plugins.mgdarts.regrowth import choose_regrowth, regrowth_distribution
from plugins.mgdarts.schedule import AdaptiveLambda


def test_lambda_grows_geometrically_while_too_little_is_pruned():
    schedule = AdaptiveLambda()
    seen = [schedule.update(pruned=0, ce_avg=1.0, sparsity_avg=1.0) for _ in range(5)]
    # ALGORITHM.md C.3: 4e-5, 2e-4, 8.4e-4, 3.4e-3, 1.4e-2, ...
    assert seen == pytest.approx([4e-5, 2e-4, 8.4e-4, 3.4e-3, 1.364e-2], rel=2e-2)


def test_lambda_halves_when_a_round_prunes_a_lot_and_holds_in_between():
    schedule = AdaptiveLambda()
    for _ in range(4):
        schedule.update(pruned=0, ce_avg=1.0, sparsity_avg=1.0)
    lam = schedule.lam
    assert schedule.update(pruned=30, ce_avg=1.0, sparsity_avg=1.0) == lam  # 24 <= 30 < 48
    assert schedule.update(pruned=48, ce_avg=1.0, sparsity_avg=1.0) == pytest.approx(lam / 2)
    assert schedule.delta == schedule.lam0


def test_lambda_freezes_once_sparsity_outweighs_the_task_loss():
    schedule = AdaptiveLambda()
    for _ in range(6):
        schedule.update(pruned=0, ce_avg=1.0, sparsity_avg=1.0)
    lam = schedule.lam
    # CE (0.01) < λ·R_op: λ may not grow any more.
    assert schedule.update(pruned=0, ce_avg=0.01, sparsity_avg=1.0) == lam
    global_phase = AdaptiveLambda(freeze_factor=0.5, lam=lam)
    global_phase.lam = lam
    assert global_phase.update(pruned=0, ce_avg=lam * 0.6, sparsity_avg=1.0) > lam
    schedule.reset()
    assert (schedule.lam, schedule.delta) == (0.0, schedule.lam0)


def _cells():
    alive = torch.ones(14, 7, dtype=torch.bool)
    alive[:, 2] = False  # op type 2 pruned everywhere in cell 0
    alive[3, 5] = False
    momentum = torch.full((14, 7), 0.1)
    momentum[:, 1] = 1.0  # op type 1 has large momentum
    sigma = torch.full((14, 7), 0.5)
    return alive, momentum, sigma


def test_distribution_sums_to_one_and_follows_importance():
    alive, momentum, sigma = _cells()
    dist = regrowth_distribution([momentum, momentum], [sigma, sigma], [alive, alive])
    assert dist.shape == (2, 7)
    assert dist.sum() == pytest.approx(1.0)
    assert dist[0, 1] > dist[0, 0]  # momentum raises an op type's share
    # An op type with no alive instance still gets a (small) share.
    assert 0 < dist[0, 2] < dist[0, 0]


def test_choices_are_pruned_edges_never_twice_and_reproducible():
    alive, momentum, sigma = _cells()
    dist = regrowth_distribution([momentum], [sigma], [alive])
    pruned = [~alive]
    picks = choose_regrowth(dist, pruned, 200, torch.Generator().manual_seed(0))
    assert len(set(picks)) == len(picks)
    assert all(bool(pruned[0][edge, op]) for _, edge, op in picks)
    assert len(picks) <= int(pruned[0].sum())
    again = choose_regrowth(dist, pruned, 200, torch.Generator().manual_seed(0))
    assert picks == again
    assert pruned[0].sum() == 15  # the caller's masks are left alone
    assert choose_regrowth(dist, pruned, 200, torch.Generator().manual_seed(1)) != picks


@pytest.mark.parametrize("size", [1, 2, 4, 8, 32])
def test_stage_head_takes_any_input_size(size):
    head = StageHead(16, 10, feature_size=size)
    assert head(torch.randn(3, 16, size, size)).shape == (3, 10)


def test_lambda_can_start_at_a_given_value():
    lam = AdaptiveLambda(lam0=0.5, lam_start=0.5)
    assert lam.lam == 0.5
    lam.update(pruned=0, ce_avg=10.0, sparsity_avg=1.0)
    assert lam.lam == 0.5 + 0.5 * 4
