"""The adaptive sparsity weight λ of MG-DARTS (the GOLD-NAS schedule, ALGORITHM.md C.3).

λ starts at 0 at every stage and grows geometrically until a commit round prunes
between ``2 n_thre`` and ``4 n_thre`` ops; it halves when a round prunes more, and
stops growing once the sparsity term outweighs the task loss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveLambda:
    lam0: float = 1e-5
    c0: float = 2.0
    n_thre: int = 12
    lam_max: float = 100.0
    # The global phase freezes λ earlier: when CE < 0.5·λ·R_op instead of CE < λ·R_op.
    freeze_factor: float = 1.0
    # The reference starts every stage at λ = 0, so its first commit round prunes with
    # no sparsity pressure; a short search can start at λ0 instead.
    lam_start: float = 0.0
    lam: float = 0.0
    delta: float = 0.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lam, self.delta = self.lam_start, self.lam0

    def update(self, pruned: int, ce_avg: float, sparsity_avg: float) -> float:
        """Adapt λ after a commit round that pruned ``pruned`` ops; return the new λ."""
        frozen = ce_avg < self.freeze_factor * self.lam * sparsity_avg
        ceiling = self.lam if frozen else self.lam_max
        if pruned >= 4 * self.n_thre:
            self.delta = self.lam0
            self.lam /= self.c0
        elif pruned < 2 * self.n_thre and self.lam != ceiling:
            self.delta *= self.c0**2
            self.lam += self.delta
        self.lam = min(self.lam, ceiling)
        return self.lam
