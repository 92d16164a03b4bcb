"""Hook specifications: everything a plugin can contribute to or observe in mgas_bench.

Plugins are found through the ``mgas_bench`` entry-point group; the built-in data
sets, granularities, observers and methods register through that same group, so
a third-party package has exactly the powers the built-ins have.

A plugin module implements any subset of these functions, decorated with
:data:`hookimpl`. Implementations may accept fewer arguments than the spec.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mgas_bench.components import (
        ArchitectureFormat,
        Dataset,
        Discretizer,
        Granularity,
        Method,
        Pruner,
        SearchSpace,
    )
    from mgas_bench.records import RunInfo

PROJECT = "mgas_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ------------------------------------------------------------------ registration
# Each returns an iterable of component objects (see mgas_bench.components). Names
# must be unique within a kind across all plugins; the host refuses to start otherwise.


@hookspec
def register_datasets() -> Iterable[Dataset]:
    """Data sets a run can name with ``--datasets``."""


@hookspec
def register_search_spaces() -> Iterable[SearchSpace]:
    """Supernets that methods build and search."""


@hookspec
def register_granularities() -> Iterable[Granularity]:
    """Kinds of searchable units (operations, filters, weights, ...)."""


@hookspec
def register_discretizers() -> Iterable[Discretizer]:
    """Functions that turn unit scores into keep/prune decisions for one granularity."""


@hookspec
def register_pruners() -> Iterable[Pruner]:
    """Policies that commit discretized decisions into masks."""


@hookspec
def register_methods() -> Iterable[Method]:
    """Search methods: each composes a search space, discretizers, a pruner and a schedule."""


@hookspec
def register_architecture_formats() -> Iterable[ArchitectureFormat]:
    """On-disk architecture formats the evaluator and ``mgas-bench arch`` can read."""


# ---------------------------------------------------------------- run lifecycle
# Observers (loggers, progress displays, trackers) implement these. They run in the
# process that executes the run; an exception in an observer fails that run.


@hookspec
def run_started(run: RunInfo) -> None:
    """A run is about to search; ``run.run_dir`` exists."""


@hookspec
def epoch_ended(run: RunInfo, phase: str, epoch: int, metrics: dict[str, float]) -> None:
    """An epoch of ``phase`` (``"search"`` or ``"eval"``) ended; ``epoch`` counts from 1.

    A method whose search reports in other units than epochs of its data (rounds that read
    part of an epoch, say) adds ``metrics["data_epochs"]``: how many epochs of the search
    data it has read so far. Progress displays count that against the budget's epochs.
    """


@hookspec
def stage_ended(run: RunInfo, stage: int, metrics: dict[str, float]) -> None:
    """A multi-stage method finished search stage ``stage`` (counting from 1).

    Stage 0 is a phase over the whole network after the numbered stages, where a
    method has one (for example a final pruning phase over every cell).
    """


@hookspec
def run_resumed(run: RunInfo, phase: str, epoch: int) -> None:
    """A run goes on from a checkpoint: ``phase`` resumes after its epoch ``epoch``.

    The epochs after ``epoch`` that the interrupted process had reported are reported
    again as they are redone.
    """


@hookspec
def run_finished(run: RunInfo, record: dict[str, Any]) -> None:
    """A run ended, successfully or not; ``record`` is what was written to record.json."""


HOOK_NAMES: frozenset[str] = frozenset(
    name for name, value in list(globals().items()) if hasattr(value, f"{PROJECT}_spec")
)
