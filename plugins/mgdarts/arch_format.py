"""The ``mg-darts-genotype`` architecture format: cell-wise genotype JSON plus weight masks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgas_bench.components import Architecture, ArchitectureFormat, NetworkSpec
from plugins.mgdarts.eval_network import MGNetworkCIFAR
from plugins.mgdarts.genotype import (
    FORMAT_TAG,
    MGGenotype,
    load_genotype,
    load_masks,
    save_genotype,
    validate_genotype_json,
    validate_masks,
)


class MGDartsGenotypeFormat(ArchitectureFormat):
    """MG-DARTS architectures, built as the official CIFAR evaluation network.

    ``Architecture.tensors`` carries the weight masks in the official nested
    layout ``[cell][op][conv]`` (``None`` builds a dense network). The number of
    cells comes from the genotype, since every cell is different: ``spec.layers``
    is ignored, and so is ``spec.channels`` when the genotype records the stem width
    it was searched with (``init_channels``, written by ``mg-darts``); otherwise
    ``spec.channels`` is ``C`` (the stem has ``3C`` channels), as for the official files.
    """

    name = "mg-darts-genotype"
    uses_layers = False
    description = (
        "MG-DARTS cell-wise genotype (per cell a list of {op, input, output, channels}) with "
        "optional weight masks; built as MG-DARTS's CIFAR evaluation network with the "
        "genotype's own number of cells"
    )

    def matches(self, payload: Mapping[str, Any]) -> bool:
        if not isinstance(payload, Mapping):
            return False
        if "format" in payload and payload["format"] != FORMAT_TAG:
            return False
        cells = payload.get("cells")
        return (
            isinstance(cells, list)
            and bool(cells)
            and all(isinstance(cell, list) for cell in cells)
            and all(
                isinstance(entry, Mapping) and "op" in entry for cell in cells for entry in cell
            )
        )

    def validate(self, payload: Mapping[str, Any]) -> None:
        validate_genotype_json(payload)

    def build_network(self, arch: Architecture, spec: NetworkSpec) -> nn.Module:
        if spec.network_style == "imagenet":
            raise NotImplementedError(
                f"{self.name} builds only the CIFAR-style network (stride-1 stem); the MG-DARTS "
                "release has no ImageNet evaluation network to follow"
            )
        if spec.network_style != "cifar":
            raise ValueError(
                f"unknown network_style {spec.network_style!r}; expected 'cifar' or 'imagenet'"
            )
        return MGNetworkCIFAR(
            int(arch.payload.get("init_channels", spec.channels)),
            spec.num_classes,
            MGGenotype.from_json(arch.payload),
            spec.auxiliary,
            in_channels=spec.in_channels,
            input_size=spec.input_size,
            masks=arch.tensors,
        )


def export_official(arch: Architecture, genotype_path: str | Path, masks_path: str | Path) -> None:
    """Write ``arch`` as the official genotype JSON and ``torch.save``-d mask list.

    An architecture without masks gets all-ones masks, since the official
    evaluation script always loads a mask file.
    """
    genotype = MGGenotype.from_json(arch.payload)
    masks = arch.tensors if arch.tensors is not None else genotype.dense_masks()
    validate_masks(genotype, masks)
    official = [
        [[mask.detach().to("cpu", torch.float32).contiguous() for mask in op] for op in cell]
        for cell in masks
    ]
    save_genotype(genotype, genotype_path)
    torch.save(official, Path(masks_path))


def import_official(
    genotype_path: str | Path, masks_path: str | Path | None = None
) -> Architecture:
    """Read an official genotype JSON (and mask file) into an ``mg-darts-genotype`` architecture."""
    genotype_path = Path(genotype_path)
    load_genotype(genotype_path)  # validates, with messages naming the cell and op
    payload = json.loads(genotype_path.read_text())
    masks = None
    if masks_path is not None:
        masks = load_masks(masks_path)
        validate_masks(MGGenotype.from_json(payload), masks)
    return Architecture(MGDartsGenotypeFormat.name, payload, tensors=masks)
