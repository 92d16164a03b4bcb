"""Registers NNI's one-shot strategies with mgas_bench (entry point ``nni``).

The plugin loads whether or not NNI is installed: without it the methods are
listed as unavailable, with the command that installs it.
"""

from __future__ import annotations

from baselines.nni_oneshot.arch_format import NniDartsSampleFormat
from baselines.nni_oneshot.method import nni_methods
from mgas_bench.hookspecs import hookimpl


@hookimpl
def register_methods():
    return nni_methods()


@hookimpl
def register_architecture_formats():
    return [NniDartsSampleFormat()]
