"""Op regrowth of progressive re-evaluation (ALGORITHM.md E).

Chooses which pruned ops come back, by sampling (cell, op type) in proportion to
an importance that mixes the α-optimiser's momentum and σ(α) of the op type's
alive instances, then an edge uniformly among those where that op type is
pruned. Randomness comes from a caller-seeded generator, not the global RNG, so
regrowth is reproducible whatever else drew random numbers (unlike bug I.20).
"""

from __future__ import annotations

import torch


def _fill_empty(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Op types with no alive instance get half the smallest value among those with one."""
    if not present.any():
        return torch.ones_like(values)
    return torch.where(present, values, values[present].min() / 2)


def _op_type_means(values: torch.Tensor, alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per op type (column): mean over alive edges, and whether any edge is alive."""
    counts = alive.sum(dim=0)
    sums = (values * alive).sum(dim=0)
    present = counts > 0
    return torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums)), present


def _normalise(x: torch.Tensor) -> torch.Tensor:
    total = x.sum()
    return x / total if total > 0 else torch.full_like(x, 1.0 / x.numel())


def regrowth_distribution(
    momentum: list[torch.Tensor], sigma_alpha: list[torch.Tensor], alive: list[torch.Tensor]
) -> torch.Tensor:
    """P(cell, op type): a (cells, op types) matrix summing to 1.

    ``momentum`` holds |α momentum| per (edge, op) of each cell, ``sigma_alpha``
    σ(α) and ``alive`` the committed op masks (bool), all (edges, ops).
    """
    op_importance, cell_g, cell_a = [], [], []
    for mom, sig, keep in zip(momentum, sigma_alpha, alive, strict=True):
        keep = keep.bool()
        g, present = _op_type_means(mom.abs(), keep)
        a, _ = _op_type_means(sig, keep)
        g, a = _fill_empty(g, present), _fill_empty(a, present)
        op_importance.append(0.5 * _normalise(g) + 0.5 * _normalise(a))
        n_alive = max(int(keep.sum()), 1)
        cell_g.append(g.sum() / n_alive)
        cell_a.append(a.sum() / n_alive)
    cell_importance = 0.5 * _normalise(torch.stack(cell_g)) + 0.5 * _normalise(torch.stack(cell_a))
    return cell_importance[:, None] * torch.stack(op_importance)


def choose_regrowth(
    distribution: torch.Tensor,
    pruned: list[torch.Tensor],
    n: int,
    generator: torch.Generator,
) -> list[tuple[int, int, int]]:
    """Draw ``n`` (cell, edge, op) to regrow; ``pruned[cell]`` is a bool (edges, ops) mask.

    A draw whose (cell, op type) has no pruned edge left is skipped, and an edge
    once chosen is no longer pruned, so nothing is regrown twice.
    """
    pruned = [p.clone().bool() for p in pruned]
    flat = distribution.flatten()
    cdf = flat.cumsum(0)
    n_ops = distribution.shape[1]
    chosen = []
    for u in torch.rand(n, generator=generator, dtype=flat.dtype):
        bin_index = int(torch.searchsorted(cdf, u, right=True).clamp(max=flat.numel() - 1))
        cell, op = divmod(bin_index, n_ops)
        edges = pruned[cell][:, op].nonzero().flatten()
        if len(edges) == 0:
            continue
        low = cdf[bin_index] - flat[bin_index]
        within = float((u - low) / flat[bin_index]) if flat[bin_index] > 0 else 0.0
        edge = int(edges[min(int(within * len(edges)), len(edges) - 1)])
        pruned[cell][edge, op] = False
        chosen.append((cell, edge, op))
    return chosen
