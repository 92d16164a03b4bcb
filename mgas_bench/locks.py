"""One process at a time per run: an OS file lock in the run's folder.

Two runners started on the same results folder (two terminals, two cluster jobs)
see the same pending runs. Whichever process takes a run's lock executes it; the
other skips it. The lock is an ``flock`` held by the process that executes the run,
so the operating system releases it when that process ends for any reason, SIGKILL
included: a run whose process died is never left locked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

LOCK = "run.lock"


class RunLocked(RuntimeError):
    """Another process is executing this run."""


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s run lock for the block; :class:`RunLocked` if another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(f"run {folder.name} is being executed by another process") from None
    try:
        yield
    finally:
        lock.release()


def is_locked(folder: Path) -> bool:
    """Whether another process holds ``folder``'s run lock right now."""
    if not (folder / LOCK).exists():
        return False
    try:
        with run_lock(folder):
            return False
    except RunLocked:
        return True
