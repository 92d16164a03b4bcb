"""Where a run computes and how: the device, mixed precision, memory format, data loading.

Nothing here assumes CUDA exists: every option also runs on CPU (bf16 autocast and
channels-last have CPU kernels), which is how the tests exercise them.
"""

from __future__ import annotations

import contextlib

import torch

from mgas_bench.config import RuntimeConfig
from mgas_bench.data import LoaderOptions


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when torch sees a GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return device


def memory_format(runtime: RuntimeConfig) -> torch.memory_format:
    return torch.channels_last if runtime.channels_last else torch.contiguous_format


def loader_options(runtime: RuntimeConfig, device: torch.device) -> LoaderOptions:
    pin = device.type == "cuda" if runtime.pin_memory is None else runtime.pin_memory
    return LoaderOptions(
        workers=runtime.loader_workers,
        pin_memory=pin and device.type == "cuda",  # pinning helps only host-to-GPU copies
        channels_last=runtime.channels_last,
    )


def autocast(runtime: RuntimeConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision = "bf16"``, else nothing."""
    if runtime.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
