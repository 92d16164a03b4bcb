"""The NNI methods: each runs one of NNI's one-shot strategies on NNI's DARTS space.

This module does not import NNI, so the methods can be listed (and report what
is missing) where NNI is not installed.
"""

from __future__ import annotations

from typing import Any

from baselines.nni_oneshot.availability import ENAS_MODULES, NNI_MODULES, unavailable_reason
from mgas_bench.components import Method, SearchContext, SearchResult

# The weight training every NNI method shares: the suite's DARTS protocol.
WEIGHT_OPTIONS: dict[str, Any] = {
    "w_lr": 0.025,
    "w_lr_min": 0.001,
    "w_momentum": 0.9,
    "w_weight_decay": 3e-4,
    "grad_clip": 5.0,
}


class NniOneShot(Method):
    def __init__(
        self,
        name: str,
        strategy: str,
        description: str,
        options: dict[str, Any] | None = None,
        modules: dict[str, str] = NNI_MODULES,
    ):
        self.name = name
        self.strategy = strategy
        self.description = description
        self._options = {**WEIGHT_OPTIONS, **(options or {})}
        self._modules = modules

    def default_options(self) -> dict[str, Any]:
        return dict(self._options)

    def unavailable_reason(self) -> str | None:
        return unavailable_reason(self._modules)

    def prepare(self, ctx: SearchContext) -> None:
        # Importing NNI and Lightning takes seconds; the search clock should not count it.
        from baselines.nni_oneshot.console import console_to_run_log

        with console_to_run_log(ctx.log):
            import baselines.nni_oneshot.search  # noqa: F401

    def search(self, ctx: SearchContext) -> SearchResult:
        from baselines.nni_oneshot.search import run_nni_search

        return run_nni_search(self.strategy, ctx)


def nni_methods() -> list[NniOneShot]:
    # NNI's Proxyless is left out: it does not support NNI's own DARTS space (its
    # supernet has no Cell mutation, and the cell's sampled paths cannot be stacked).
    return [
        NniOneShot(
            "nni-darts",
            "darts",
            "NNI 3.0's DARTS strategy (first order) on NNI's DARTS space",
            {"arch_lr": 3e-4},
        ),
        NniOneShot(
            "nni-gumbel-darts",
            "gumbel-darts",
            "NNI 3.0's GumbelDARTS (SNAS-style Gumbel-softmax paths) on NNI's DARTS space",
            {"arch_lr": 3e-4, "temperature": 1.0, "temperature_min": 0.33},
        ),
        NniOneShot(
            "nni-enas",
            "enas",
            "NNI 3.0's ENAS (PPO controller over a weight-sharing supernet) on NNI's DARTS space",
            {"batches_per_update": 20},
            modules=ENAS_MODULES,
        ),
        NniOneShot(
            "nni-random",
            "random",
            "NNI 3.0's RandomOneShot supernet, best of `samples` random architectures "
            "by shared-weight accuracy",
            {"samples": 20},
        ),
    ]
