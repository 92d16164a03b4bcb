"""The results store: one folder per run under ``<results>/runs/<run id>/``.

``record.json`` is the source of truth for a run. It is written atomically
(temporary file, then rename), so a killed process leaves either the old record
or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mgas_bench.config import RunConfig

RECORD = "record.json"
LOG = "log.txt"
ARCHITECTURE = "architecture.json"
ARCHITECTURE_TENSORS = "architecture.pt"

STATUS_OK, STATUS_FAILED, STATUS_RUNNING = "ok", "failed", "running"

# The process's umask, read once (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass(frozen=True)
class RunInfo:
    """What observers are told about a run."""

    run_id: str
    run_dir: Path
    config: RunConfig
    # Other runs write to the same console at the same time (``--jobs``): an observer
    # should not draw per-run progress there.
    shares_console: bool = False


def runs_dir(results: Path) -> Path:
    return results / "runs"


def run_dir(results: Path, config: RunConfig) -> Path:
    return runs_dir(results) / config.run_id()


class ResultsWriteError(RuntimeError):
    """The results folder cannot be written (full disk, no permission, not a folder)."""


def check_writable(results: Path) -> None:
    """Fail before any run starts if ``results`` cannot hold records."""
    write_json_atomic(runs_dir(results) / ".write-check.json", {"ok": True})
    (runs_dir(results) / ".write-check.json").unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, whole or not at all (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def write_bytes_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` whole or not at all: a failed write leaves the old file.

    :class:`ResultsWriteError` says which file could not be written and why.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            # mkstemp makes the file private (0600); give it the mode open() would, so
            # that others sharing the results folder can read the records.
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise ResultsWriteError(
                f"cannot write {path}: {reason}; records written before are intact "
                "(free space or fix permissions, then run the same command again to resume)"
            ) from exc
        raise


def read_record(folder: Path) -> dict[str, Any] | None:
    """The run's record, or None if it has none yet."""
    try:
        return json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        return None


def is_completed(folder: Path) -> bool:
    """Whether the run in ``folder`` has a readable record with status ok.

    An unreadable record counts as not completed, so the run is executed again.
    """
    try:
        record = read_record(folder)
    except ValueError:
        return False
    return record is not None and record.get("status") == STATUS_OK


def iter_records(results: Path) -> Iterator[tuple[Path, dict[str, Any] | Exception]]:
    """Every run folder with its parsed record, or the error that stopped parsing it."""
    root = runs_dir(results)
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        path = folder / RECORD
        if not path.exists():
            continue
        try:
            yield folder, json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            yield folder, exc


def new_record(config: RunConfig, status: str, device: str) -> dict[str, Any]:
    return {
        "run_id": config.run_id(),
        "method": config.method,
        "dataset": config.dataset,
        "seed": config.seed,
        "variant": config.variant,
        "status": status,
        "error": None,
        "config": config.model_dump(mode="json"),
        "versions": versions(),
        "device": device,
        "metrics": {},
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("mgas-bench", "torch", "torchvision", "pluggy", "nni"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out
