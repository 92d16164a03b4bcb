"""The ``darts-genotype`` architecture format: DARTS genotype JSON, no tensors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from baselines.darts.eval_network import NetworkCIFAR, NetworkImageNet
from baselines.darts.genotype import GENOTYPE_KEYS, Genotype, validate_genotype_json
from mgas_bench.components import Architecture, ArchitectureFormat, NetworkSpec


class DartsGenotypeFormat(ArchitectureFormat):
    name = "darts-genotype"
    description = (
        "DARTS genotype (normal/reduce cells as [op, input] pairs plus concat lists); "
        "built as DARTS's NetworkCIFAR or NetworkImageNet evaluation network"
    )

    def matches(self, payload: Mapping[str, Any]) -> bool:
        return isinstance(payload, Mapping) and all(key in payload for key in GENOTYPE_KEYS)

    def validate(self, payload: Mapping[str, Any]) -> None:
        validate_genotype_json(payload)

    def build_network(self, arch: Architecture, spec: NetworkSpec) -> nn.Module:
        genotype = Genotype.from_json(arch.payload)
        if spec.network_style == "imagenet":
            network_cls: type[NetworkCIFAR | NetworkImageNet] = NetworkImageNet
        elif spec.network_style == "cifar":
            network_cls = NetworkCIFAR
        else:
            raise ValueError(
                f"unknown network_style {spec.network_style!r}; expected 'cifar' or 'imagenet'"
            )
        return network_cls(
            spec.channels,
            spec.num_classes,
            spec.layers,
            spec.auxiliary,
            genotype,
            in_channels=spec.in_channels,
            input_size=spec.input_size,
        )
