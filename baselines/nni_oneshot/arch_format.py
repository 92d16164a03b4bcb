"""The ``nni-darts-sample`` format: an architecture exported from NNI's DARTS space.

Lets ``mgas-bench arch`` and the evaluator take NNI's export as it is, for
example from an NNI experiment run outside the suite. Needs no NNI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from baselines.darts.arch_format import DartsGenotypeFormat
from baselines.nni_oneshot.sample import genotype_from_nni_sample, looks_like_nni_sample
from mgas_bench.components import Architecture, ArchitectureFormat, NetworkSpec


class NniDartsSampleFormat(ArchitectureFormat):
    name = "nni-darts-sample"
    description = (
        "NNI DARTS-space export ({'normal/op_2_0': op, 'normal/input_2_0': [i], ...}); "
        "built as the DARTS evaluation network of the equivalent genotype"
    )

    def matches(self, payload: Mapping[str, Any]) -> bool:
        return looks_like_nni_sample(payload)

    def validate(self, payload: Mapping[str, Any]) -> None:
        genotype_from_nni_sample(payload)

    def build_network(self, arch: Architecture, spec: NetworkSpec) -> nn.Module:
        genotype = genotype_from_nni_sample(arch.payload)
        darts = Architecture("darts-genotype", genotype.to_json())
        return DartsGenotypeFormat().build_network(darts, spec)
