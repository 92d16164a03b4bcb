"""Registers the DARTS baseline with mgas_bench (entry point ``darts``)."""

from __future__ import annotations

from baselines.darts.arch_format import DartsGenotypeFormat
from baselines.darts.discretizers import darts_top2
from baselines.darts.method import Darts
from baselines.darts.search_space import DartsSearchSpace
from mgas_bench.hookspecs import hookimpl


@hookimpl
def register_methods():
    return [Darts("darts", second_order=False), Darts("darts-2nd", second_order=True)]


@hookimpl
def register_search_spaces():
    return [DartsSearchSpace()]


@hookimpl
def register_discretizers():
    return [darts_top2()]


@hookimpl
def register_architecture_formats():
    return [DartsGenotypeFormat()]
