"""Peak memory of a block of code: what it added on top of what was already in use.

On CUDA this is torch's allocator peak. On CPU it is the process's resident set
high-water mark, which Linux lets a process reset (``/proc/self/clear_refs``),
so the figure belongs to the block alone even when several runs share a process.

The first optimiser step in a process imports ``torch._dynamo`` (and sympy with it):
about 150 MB of Python modules. Left alone, that lands in the peak of whichever block
steps an optimiser first, so a method whose toolkit imported it earlier (NNI through
Lightning) looked 150 MB lighter. The meter imports it before taking its baseline.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then read ``peak.mb``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb = float("nan")
        self._baseline = 0.0
        self._resettable = False

    def __enter__(self) -> PeakMemory:
        import torch._dynamo  # see the module docstring

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self._resettable = True
        except OSError:
            self._resettable = False
        self._baseline = (_status_kb("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.mb = self.so_far()

    def so_far(self) -> float:
        """The peak above the baseline up to now, inside the block (a checkpoint keeps it)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._resettable and (hwm := _status_kb("VmHWM")) is not None:
            peak = hwm / 1024
        else:
            # ru_maxrss is the lifetime peak: only meaningful in a fresh process.
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        return max(peak - self._baseline, 0.0)
