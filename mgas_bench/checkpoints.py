"""The host's side of checkpoint and resume: one file per phase in ``runs/<id>/checkpoints/``.

A method decides what its state is and when to save it (``ctx.checkpoints``); this
module adds the random generators and the resource accounting, so that a resumed run
draws the same numbers, and reports the same search time and peak memory figures, as
one that never stopped. A checkpoint is a pickle of live objects, meant for the same
code that wrote it: one that cannot be read is reported in the run's log and the
phase starts afresh.
"""

from __future__ import annotations

import io
import logging
import pickle
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgas_bench.components import Checkpoints
from mgas_bench.records import write_bytes_atomic

CHECKPOINTS = "checkpoints"  # the folder, inside a run's folder
_VERSION = 1


def checkpoint_dir(run_folder: Path) -> Path:
    return run_folder / CHECKPOINTS


def discard_checkpoints(run_folder: Path) -> None:
    shutil.rmtree(checkpoint_dir(run_folder), ignore_errors=True)


def random_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for generator, saved in zip(generators, state["generators"], strict=True):
        generator.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunCheckpoints(Checkpoints):
    """Checkpoints of one phase (``"search"`` or ``"eval"``) of one run.

    ``generators`` are the phase's own generators (the data loaders'), saved and put
    back with the global ones. ``peak_mb`` reads the phase's memory peak so far.
    ``resumed`` is told the epoch a restored checkpoint goes on from.
    """

    def __init__(
        self,
        run_folder: Path,
        phase: str,
        log: logging.Logger,
        generators: Sequence[torch.Generator] = (),
        peak_mb: Callable[[], float] = lambda: 0.0,
        resumed: Callable[[int], None] = lambda epoch: None,
    ):
        self.path = checkpoint_dir(run_folder) / f"{phase}.pt"
        self.phase, self.log = phase, log
        self.generators = list(generators)
        self._peak_mb, self._resumed = peak_mb, resumed
        self._loaded: dict[str, Any] | None = None
        self._read = False
        self._unpicklable = False
        self.seconds_before = 0.0  # the phase's time up to the restored checkpoint
        self.peak_mb_before = 0.0
        self._clock = time.perf_counter()

    def start_clock(self) -> None:
        self._clock = time.perf_counter()

    def seconds(self) -> float:
        """The phase's time: before the restored checkpoint, plus since :meth:`start_clock`."""
        return self.seconds_before + time.perf_counter() - self._clock

    def save(self, state: Any, *, epoch: int, stage: int | None = None) -> None:
        if self._unpicklable:
            return
        checkpoint = {
            "version": _VERSION,
            "epoch": epoch,
            "stage": stage,
            "seconds": self.seconds(),
            "peak_mb": max(self.peak_mb_before, self._peak_mb()),
            "random": random_state(self.generators),
            "state": state,
        }
        buffer = io.BytesIO()
        try:
            torch.save(checkpoint, buffer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # A plugin's state holding a lambda or a lock: the run itself is fine.
            self._unpicklable = True
            self.log.warning(
                "cannot checkpoint the %s (%s: %s); if this run is killed it starts afresh",
                self.phase,
                type(exc).__name__,
                exc,
            )
            return
        write_bytes_atomic(self.path, buffer.getvalue())
        where = f"epoch {epoch}" + (f", stage {stage}" if stage is not None else "")
        self.log.info("checkpoint: %s %s", self.phase, where)

    def restore(self) -> Any | None:
        if not self._read:
            self._read = True
            self._loaded = self._load()
            if self._loaded is not None:
                self.seconds_before = float(self._loaded["seconds"])
                self.peak_mb_before = float(self._loaded["peak_mb"])
                self.log.info(
                    "resuming %s after epoch %d from %s",
                    self.phase,
                    self._loaded["epoch"],
                    self.path,
                )
                self._resumed(int(self._loaded["epoch"]))
        if self._loaded is None:
            return None
        set_random_state(self._loaded["random"], self.generators)
        return self._loaded["state"]

    def _load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            # Our own file, holding live objects (optimisers, modules): not weights only.
            checkpoint = torch.load(self.path, weights_only=False)
            if checkpoint.get("version") != _VERSION:
                raise ValueError(f"checkpoint version {checkpoint.get('version')!r}")
            if len(checkpoint["random"]["generators"]) != len(self.generators):
                raise ValueError("it saved a different number of data loader generators")
        except Exception as exc:  # any unreadable checkpoint means: start afresh
            self.log.warning(
                "cannot resume from %s (%s: %s); the %s starts afresh",
                self.path,
                type(exc).__name__,
                exc,
                self.phase,
            )
            return None
        return checkpoint

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
