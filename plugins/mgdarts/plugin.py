"""Registers the MG-DARTS architecture format with mgas_bench (entry point ``mgdarts``)."""

from __future__ import annotations

from mgas_bench.hookspecs import hookimpl
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat


@hookimpl
def register_architecture_formats():
    return [MGDartsGenotypeFormat()]
