"""Registers MG-DARTS with mgas_bench (entry point ``mgdarts``).

Everything here goes through the host's public hooks, as a third-party plugin would:
the method, its search space, one learnable discretizer per granularity, and the
official architecture format.
"""

from __future__ import annotations

from mgas_bench.hookspecs import hookimpl
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat
from plugins.mgdarts.discretizers import threshold_discretizers
from plugins.mgdarts.method import MGDarts
from plugins.mgdarts.supernet import MGDartsSearchSpace


@hookimpl
def register_methods():
    return [MGDarts()]


@hookimpl
def register_search_spaces():
    return [MGDartsSearchSpace()]


@hookimpl
def register_discretizers():
    return threshold_discretizers()


@hookimpl
def register_architecture_formats():
    return [MGDartsGenotypeFormat()]
