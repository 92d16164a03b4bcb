"""Keeps NNI's and Lightning's console output out of the terminal and in the run's log.

A suite prints one line per run; NNI prints coloured INFO lines, Lightning prints
trainer banners, and both raise warnings. All of it belongs to the run, so it goes
to the run's log, where a failed run's story can be read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

# Loggers NNI and Lightning write to (pytorch_lightning re-exports lightning's).
CHATTY_LOGGERS: tuple[str, ...] = (
    "nni",
    "pytorch_lightning",
    "lightning",
    "lightning.pytorch",
    "lightning_fabric",
    "py.warnings",
)


class _ToRunLog(logging.Handler):
    def __init__(self, log: logging.Logger):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.log(record.levelno, "[%s] %s", record.name, record.getMessage())


class _LinesToRunLog(io.TextIOBase):
    """A text stream that logs each complete line it is given."""

    def __init__(self, log: logging.Logger, source: str):
        self.log, self.source, self._pending = log, source, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self.log.info("[%s] %s", self.source, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self.log.info("[%s] %s", self.source, self._pending.rstrip())
        self._pending = ""


@contextlib.contextmanager
def console_to_run_log(log: logging.Logger) -> Iterator[None]:
    """Inside the block, NNI/Lightning logs, warnings, stdout and stderr go to ``log``.

    Set up before NNI is imported, so what importing it prints is caught too.
    """
    handler = _ToRunLog(log)
    saved = []
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    stdout, stderr = _LinesToRunLog(log, "stdout"), _LinesToRunLog(log, "stderr")
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            warnings.simplefilter("default")
            logging.captureWarnings(True)
            try:
                from nni.runtime.log import silence_stdout

                # NNI adds a stdout handler of its own when imported; once removed it
                # does not come back.
                silence_stdout()
                yield
            finally:
                logging.captureWarnings(False)
                stdout.flush()
                stderr.flush()
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
