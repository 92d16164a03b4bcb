"""How MG-DARTS spends a search budget: rounds, and the batches each round trains on.

The suite gives every method the same budget, ``epochs`` passes over the search split.
MG-DARTS is organised in rounds instead: each phase (stage, or the global phase) runs a
number of rounds (warm-up rounds, then search rounds that each end in a commit), and
each regrowth after stage 2 on runs one round with frozen masks. Each round gets an
equal share of the budget's batches, so the whole search reads at most ``epochs``
passes over the data, as DARTS does. A round is a full pass only when the budget has
as many epochs as the schedule has rounds; the suite's small CPU budgets give
fractions of a pass.

A phase may stop early once it reaches its size target, so a search can use less than
its budget, never more.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

Batch = TypeVar("Batch")


@dataclass(frozen=True)
class RoundPlan:
    """The round schedule of one search: rounds per phase, in all, and batches per round."""

    rounds_per_phase: int
    rounds: int
    batches_per_round: int

    def data_epochs(self, batches_per_epoch: int) -> float:
        """Passes over the search data that all the rounds read together."""
        return self.rounds * self.batches_per_round / max(batches_per_epoch, 1)


def plan_rounds(
    epochs: int, batches_per_epoch: int, phases: int, regrowth_rounds: int
) -> RoundPlan:
    """Split ``epochs`` passes of ``batches_per_epoch`` batches over the schedule's rounds.

    Each phase gets ``max(2, epochs // phases)`` rounds, so that it has a warm-up round
    and at least one round that commits; regrowth adds ``regrowth_rounds``. Every round
    gets at least one batch.
    """
    if phases < 1:
        raise ValueError(f"need at least one phase, got {phases}")
    rounds_per_phase = max(2, epochs // phases)
    rounds = phases * rounds_per_phase + regrowth_rounds
    batches = max(1, epochs * batches_per_epoch // rounds)
    return RoundPlan(rounds_per_phase, rounds, batches)


def interleaved(first: Iterable[Batch], second: Iterable[Batch]) -> Iterator[Batch]:
    """Batches of ``first`` and ``second`` in turn, then the rest of the longer one.

    A round that reads only part of a pass still sees both halves of the search split.
    """
    sentinel = object()
    for pair in itertools.zip_longest(first, second, fillvalue=sentinel):
        for batch in pair:
            if batch is not sentinel:
                yield batch


def round_batches(first: Iterable[Batch], second: Iterable[Batch], count: int) -> Iterator[Batch]:
    """``count`` batches from fresh passes over both loaders, as many passes as it takes.

    Each round starts new passes (and so new shuffles) rather than going on where the
    last round stopped: a round then depends only on the loaders' random state at its
    start, which a checkpoint restores.
    """

    def passes() -> Iterator[Batch]:
        while True:
            empty = True
            for batch in interleaved(first, second):
                empty = False
                yield batch
            if empty:
                return

    return itertools.islice(passes(), count)
