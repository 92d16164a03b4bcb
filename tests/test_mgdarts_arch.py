"""MG-DARTS architecture format: genotype and mask files, evaluation ops and network."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import plugins.mgdarts.plugin as mgdarts_plugin
from mgas_bench.components import Architecture, NetworkSpec
from mgas_bench.profiling import (
    count_masked_out_parameters,
    count_nonzero_parameters,
    count_parameters,
)
from mgas_bench.registry import build_registry
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat, export_official, import_official
from plugins.mgdarts.eval_network import MGCell, MGNetworkCIFAR
from plugins.mgdarts.eval_ops import DilConv, MaskedConv2d, SepConv
from plugins.mgdarts.genotype import (
    PRIMITIVES,
    GeneOp,
    MGGenotype,
    load_genotype,
    load_masks,
    mask_size,
    mask_zeros,
    save_genotype,
    validate_genotype_json,
    validate_masks,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SMALL_JSON = REFERENCE / "mg_darts_small_genotype.json"
LARGE_JSON = REFERENCE / "mg_darts_genotype.json"
SMALL_MASKS = REFERENCE / "mg_darts_small_masks.pt"
DARTS_V2_JSON = REFERENCE / "darts_v2_genotype.json"

needs_reference = pytest.mark.skipif(
    not all(p.is_file() for p in (SMALL_JSON, LARGE_JSON, SMALL_MASKS)),
    reason=f"the released MG-DARTS genotypes and masks are not in {REFERENCE}",
)

FORMAT = MGDartsGenotypeFormat()
CIFAR10 = NetworkSpec(in_channels=3, num_classes=10, input_size=32, channels=24, layers=20)


def _op(op: str, src: int, dst: int, *channels: int) -> dict[str, Any]:
    return {"op": op, "input": src, "output": dst, "channels": list(channels)}


def tiny_payload() -> dict[str, Any]:
    """Three cells (reductions at 1 and 2), every op type, unequal widths, an empty node."""
    return {
        "format": "mg-darts-official",
        "primitives": list(PRIMITIVES),
        "concat": [2, 3, 4, 5],
        "cells": [
            [
                _op("sep_conv_3x3", 0, 2, 6, 4, 8),
                _op("dil_conv_3x3", 1, 2, 6, 8),
                _op("skip_connect", 2, 3, 8),
                _op("max_pool_3x3", 2, 4, 8),
                _op("sep_conv_5x5", 3, 4, 8, 6, 8),
                _op("dil_conv_5x5", 4, 5, 8, 10),
            ],
            [  # node 5 has no op
                _op("skip_connect", 0, 2, 8),
                _op("avg_pool_3x3", 1, 2, 8),
                _op("sep_conv_3x3", 1, 3, 8, 6, 12),
                _op("dil_conv_3x3", 2, 4, 8, 12),
            ],
            [
                _op("sep_conv_3x3", 0, 2, 10, 6, 14),
                _op("max_pool_3x3", 1, 2, 14),
                _op("skip_connect", 0, 3, 10),
                _op("dil_conv_5x5", 3, 4, 10, 6),
                _op("sep_conv_5x5", 2, 5, 14, 4, 6),
            ],
        ],
    }


def random_masks(genotype: MGGenotype, seed: int = 0) -> list[list[list[torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        [
            [(torch.rand(mask.shape, generator=generator) > 0.3).float() for mask in op]
            for op in cell
        ]
        for cell in genotype.dense_masks()
    ]


@pytest.fixture(scope="module")
def small_arch() -> Architecture:
    if not SMALL_JSON.is_file() or not SMALL_MASKS.is_file():
        pytest.skip(f"the released small MG-DARTS architecture is not in {REFERENCE}")
    return import_official(SMALL_JSON, SMALL_MASKS)


@pytest.fixture(scope="module")
def small_networks(small_arch: Architecture) -> tuple[MGNetworkCIFAR, MGNetworkCIFAR]:
    """The released small architecture at C=24 on CIFAR-10: (dense, masked), aux head on."""
    spec = NetworkSpec(3, 10, 32, 24, layers=20, auxiliary=True)
    torch.manual_seed(0)
    dense = FORMAT.build_network(Architecture(FORMAT.name, small_arch.payload), spec)
    torch.manual_seed(0)
    masked = FORMAT.build_network(small_arch, spec)
    assert isinstance(dense, MGNetworkCIFAR) and isinstance(masked, MGNetworkCIFAR)
    return dense, masked


# ------------------------------------------------------------ released archs


@needs_reference
def test_released_small_arch_has_070m_parameters(
    small_networks: tuple[MGNetworkCIFAR, MGNetworkCIFAR],
) -> None:
    dense, masked = small_networks
    assert len(dense.cells) == 8
    assert dense.reductions == {2, 5}
    params = count_parameters(dense)
    # Measured 704,082 (aux head excluded, masked weights counted): ALGORITHM.md G.2's 0.70 M.
    assert params == 704_082
    assert round(params / 1e6, 2) == 0.70
    assert count_parameters(masked) == params
    # The head exists and is excluded; at 32x32 it is DARTS's fixed 5x5/3 pooling head.
    assert count_parameters(dense, exclude_prefixes=()) > params
    assert isinstance(dense.auxiliary_head.features[1], torch.nn.AvgPool2d)
    assert dense.classifier.in_features == 4 * 96  # the last cell's nodes are 96 wide


@needs_reference
def test_released_small_arch_cifar100_and_forward(small_arch: Architecture) -> None:
    torch.manual_seed(0)
    net = FORMAT.build_network(small_arch, NetworkSpec(3, 100, 32, 24, 20, auxiliary=True))
    assert round(count_parameters(net) / 1e6, 2) == 0.74  # ALGORITHM.md G.2
    net.train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and aux is not None and aux.shape == (2, 100)
    net.eval()
    logits, aux = net(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 100) and aux is None


@needs_reference
def test_released_large_arch_has_229m_parameters() -> None:
    genotype = load_genotype(LARGE_JSON)
    net = MGNetworkCIFAR(44, 10, genotype, auxiliary=False)
    assert len(net.cells) == 14 and net.reductions == {4, 9}
    params = count_parameters(net)
    # Measured 2,290,716.
    assert params == 2_290_716
    assert round(params / 1e6, 2) == 2.29
    assert count_masked_out_parameters(net) == 0


@needs_reference
def test_released_masks_prune_6940_of_518232_weights(
    small_arch: Architecture, small_networks: tuple[MGNetworkCIFAR, MGNetworkCIFAR]
) -> None:
    masks = small_arch.tensors
    assert mask_size(masks) == 518_232
    assert mask_zeros(masks) == 6_940
    dense, masked = small_networks
    assert count_masked_out_parameters(masked) == 6_940
    assert count_masked_out_parameters(dense) == 0
    # Same seed, same weights: the masked copy differs exactly by the zeroed weights.
    assert count_nonzero_parameters(dense) - count_nonzero_parameters(masked) == 6_940
    assert count_nonzero_parameters(masked) == 685_690


@needs_reference
def test_released_masks_match_network_conv_shapes(
    small_arch: Architecture, small_networks: tuple[MGNetworkCIFAR, MGNetworkCIFAR]
) -> None:
    genotype = MGGenotype.from_json(small_arch.payload)
    validate_masks(genotype, small_arch.tensors)
    _, masked = small_networks
    convs = masked.masked_convs()
    assert [len(cell) for cell in convs] == [25, 12, 34, 36, 25, 22, 22, 8]
    for c, (cell_genes, cell_convs, cell_masks) in enumerate(
        zip(genotype.cells, convs, small_arch.tensors, strict=True)
    ):
        for gene, op_convs, op_masks in zip(cell_genes, cell_convs, cell_masks, strict=True):
            assert len(op_convs) == len(op_masks) == len(gene.conv_weight_shapes())
            for conv, mask, shape in zip(
                op_convs, op_masks, gene.conv_weight_shapes(), strict=True
            ):
                assert tuple(conv.weight.shape) == tuple(mask.shape) == shape, (c, gene)
                assert torch.equal(conv.weight_mask, mask)
                assert not conv.weight[mask == 0].any()
    # ALGORITHM.md G.1's example: cell 0 op 1 is a 5x5 sep conv with an 18-20-18 layout.
    shapes = [tuple(conv.weight.shape) for conv in convs[0][1]]
    assert shapes == [(18, 1, 5, 5), (20, 18, 1, 1), (20, 1, 5, 5), (18, 20, 1, 1)]


@needs_reference
def test_official_round_trip(small_arch: Architecture, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = FORMAT.build_network(small_arch, CIFAR10)
    exported = Architecture(FORMAT.name, small_arch.payload, tensors=net.masks())
    export_official(exported, tmp_path / "genotype.json", tmp_path / "masks.pt")
    again = import_official(tmp_path / "genotype.json", tmp_path / "masks.pt")
    assert again.format == "mg-darts-genotype"
    assert again.payload == json.loads(SMALL_JSON.read_text())
    assert again.payload == small_arch.payload
    pairs = [
        (a, b)
        for cell_a, cell_b in zip(small_arch.tensors, again.tensors, strict=True)
        for op_a, op_b in zip(cell_a, cell_b, strict=True)
        for a, b in zip(op_a, op_b, strict=True)
    ]
    assert len(pairs) == sum(len(op) for cell in small_arch.tensors for op in cell) > 0
    for a, b in pairs:
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)


@needs_reference
def test_format_detection_and_registration() -> None:
    import plugins.mgdarts.plugin as plugin

    registry = build_registry(extra_plugins=[("mgdarts", plugin)])
    fmt = registry.get("architecture_format", "mg-darts-genotype")
    official = json.loads(SMALL_JSON.read_text())
    assert fmt.matches(official)
    fmt.validate(official)
    assert fmt.matches({"cells": official["cells"]})
    assert not fmt.matches({**official, "format": "something-else"})
    if DARTS_V2_JSON.is_file():
        darts = json.loads(DARTS_V2_JSON.read_text())
        assert not fmt.matches(darts)
        assert not registry.get("architecture_format", "darts-genotype").matches(official)


# --------------------------------------------------------- tiny architectures


def test_one_training_step_keeps_masked_weights_zero() -> None:
    genotype = MGGenotype.from_json(tiny_payload())
    masks = random_masks(genotype)
    assert 0 < mask_zeros(masks) < mask_size(masks)
    torch.manual_seed(0)
    net = MGNetworkCIFAR(4, 10, genotype, True, in_channels=1, input_size=8, masks=masks)
    net.drop_path_prob = 0.3
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    net.train()
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    for _ in range(2):  # the second step exercises the momentum buffers
        optimizer.zero_grad()
        logits, aux = net(x)
        assert logits.shape == (4, 10) and aux is not None and aux.shape == (4, 10)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        loss.backward()
        optimizer.step()
    convs = [conv for cell in net.masked_convs() for op in cell for conv in op]
    assert len(convs) == sum(len(op) for cell in masks for op in cell)
    for conv in convs:
        assert torch.count_nonzero(conv.weight[conv.weight_mask == 0]) == 0
    assert count_masked_out_parameters(net) == mask_zeros(masks)
    moved = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert any(".pw1." in n for n in moved) and any(n.startswith("auxiliary_head") for n in moved)


def test_node_without_op_is_left_out_of_the_channel_count() -> None:
    genotype = MGGenotype.from_json(tiny_payload())
    net = MGNetworkCIFAR(4, 10, genotype, False, in_channels=1, input_size=8)
    cell = net.cells[1]
    assert cell.concat == (2, 3, 4)
    # Nodes 2, 3, 4 are 8, 12, 12 wide; the official code would add node 5's default width.
    assert cell.out_channels == 32
    assert net.cells[2].preprocess1[1].in_channels == 32
    assert [c.out_channels for c in net.cells] == [34, 32, 36]
    assert net.classifier.in_features == 36
    net.eval()
    logits, aux = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10) and aux is None


def _uniform_payload(layers: int) -> dict[str, Any]:
    cell = [
        _op("sep_conv_3x3", 0, 2, 8, 6, 8),
        _op("skip_connect", 1, 2, 8),
        _op("dil_conv_3x3", 2, 3, 8, 8),
        _op("avg_pool_3x3", 0, 4, 8),
        _op("max_pool_3x3", 1, 5, 8),
        _op("sep_conv_5x5", 4, 5, 8, 8, 8),
    ]
    return {"cells": [copy.deepcopy(cell) for _ in range(layers)]}


@pytest.mark.parametrize(("layers", "input_size"), [(1, 8), (2, 8), (4, 8), (5, 7)])
def test_fewer_than_six_cells_train(layers: int, input_size: int) -> None:
    genotype = MGGenotype.from_json(_uniform_payload(layers))
    torch.manual_seed(0)
    net = MGNetworkCIFAR(4, 5, genotype, True, in_channels=1, input_size=input_size)
    assert len(net.cells) == layers
    net.drop_path_prob = 0.2
    net.train()
    logits, aux = net(torch.randn(2, 1, input_size, input_size))
    assert logits.shape == (2, 5) and aux is not None and aux.shape == (2, 5)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert net.stem[0].weight.grad is not None


def test_build_network_uses_the_spec_and_ignores_layers() -> None:
    arch = Architecture(FORMAT.name, tiny_payload())
    spec = NetworkSpec(in_channels=1, num_classes=7, input_size=8, channels=4, layers=20)
    net = FORMAT.build_network(arch, spec)
    assert len(net.cells) == 3
    assert net.stem[0].in_channels == 1 and net.stem[0].out_channels == 12
    assert not hasattr(net, "auxiliary_head")
    assert net.drop_path_prob == 0.0
    imagenet = NetworkSpec(3, 1000, 224, 48, 14, network_style="imagenet")
    with pytest.raises(NotImplementedError, match="only the CIFAR-style network"):
        FORMAT.build_network(arch, imagenet)


def test_dense_export_writes_all_ones_masks(tmp_path: Path) -> None:
    arch = Architecture(FORMAT.name, tiny_payload())
    export_official(arch, tmp_path / "g.json", tmp_path / "m.pt")
    masks = load_masks(tmp_path / "m.pt")
    assert mask_zeros(masks) == 0 and mask_size(masks) > 0
    layout = [[len(op) for op in cell] for cell in masks]
    assert layout == [[4, 2, 0, 0, 4, 2], [0, 0, 4, 2], [4, 0, 0, 2, 4]]
    again = import_official(tmp_path / "g.json")
    assert again.payload == tiny_payload() and again.tensors is None


def test_genotype_save_load_round_trip(tmp_path: Path) -> None:
    genotype = MGGenotype.from_json({**tiny_payload(), "source": "hand-written"})
    save_genotype(genotype, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == genotype


# --------------------------------------------------------------------- ops


def test_masked_conv_and_op_conv_order() -> None:
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 3, padding=1)
    mask = (torch.rand(conv.weight.shape) > 0.5).float()
    conv.set_mask(mask)
    assert not conv.weight[mask == 0].any()
    conv.reset_parameters()
    assert not conv.weight[mask == 0].any()
    x = torch.randn(1, 3, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * mask, padding=1))
    with pytest.raises(ValueError, match=re.escape("mask shape (4, 3, 1, 1) does not match")):
        conv.set_mask(torch.ones(4, 3, 1, 1))
    with pytest.raises(ValueError, match="only 0 and 1"):
        conv.set_mask(torch.full(conv.weight.shape, 0.5))

    sep = SepConv(6, 10, 8, 5, stride=2)
    dw1, pw1, dw2, pw2 = sep.masked_convs()
    assert (dw1.groups, dw1.stride, pw1.out_channels) == (6, (2, 2), 10)
    assert (dw2.groups, dw2.stride, pw2.out_channels) == (10, (1, 1), 8)
    assert sep(torch.randn(1, 6, 8, 8)).shape == (1, 8, 4, 4)
    dil = DilConv(6, 4, 3, stride=1)
    dw, pw = dil.masked_convs()
    assert dw.dilation == (2, 2) and dw.groups == 6 and pw.out_channels == 4
    assert dil(torch.randn(1, 6, 7, 7)).shape == (1, 4, 7, 7)


def test_drop_path_spares_identity_and_drops_whole_samples() -> None:
    genes = [GeneOp("skip_connect", 0, 2, (8,)), GeneOp("max_pool_3x3", 1, 3, (8,))]
    cell = MGCell(genes, (2, 3, 4, 5), 8, 8, 8, reduction=False, reduction_prev=False)
    cell.train()
    torch.manual_seed(0)
    s0, s1 = torch.randn(64, 8, 4, 4), torch.randn(64, 8, 4, 4)
    out = cell(s0, s1, 0.5)
    assert out.shape == (64, 16, 4, 4)
    assert torch.equal(out[:, :8], cell.preprocess0(s0))  # Identity: never dropped
    pooled = cell.ops[1](cell.preprocess1(s1))
    dropped = out[:, 8:].flatten(1).abs().sum(1) == 0
    assert 0 < int(dropped.sum()) < 64
    assert torch.allclose(out[~dropped, 8:], 2 * pooled[~dropped])
    cell.eval()
    assert torch.equal(cell(s0, s1, 0.5)[:, 8:], cell.ops[1](cell.preprocess1(s1)))


# -------------------------------------------------------------- validation

Mutation = Callable[[dict[str, Any]], None]


def _set(cell: int, op: int, key: str, value: Any) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        payload["cells"][cell][op][key] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _set(0, 1, "op", "conv_7x7"),
            "cell 0, op 1: unknown op 'conv_7x7'; known ops: skip_connect, sep_conv_3x3, "
            "sep_conv_5x5, dil_conv_3x3, dil_conv_5x5, avg_pool_3x3, max_pool_3x3",
        ),
        (_set(1, 2, "input", 5), "cell 1, op 2 (sep_conv_3x3): input node 5 is out of range 0..4"),
        (
            _set(2, 0, "output", 6),
            "cell 2, op 0 (sep_conv_3x3): output node 6 is out of range 2..5",
        ),
        (_set(0, 2, "input", 3), "input node 3 must come before output node 3"),
        (
            _set(0, 0, "channels", [6, 8]),
            "cell 0, op 0 (sep_conv_3x3 0->2): channels must be a list of 3 ([C_in, C_mid, C_out])",
        ),
        (
            _set(0, 1, "channels", [6, 4, 8]),
            "cell 0, op 1 (dil_conv_3x3 1->2): channels must be a list of 2 ([C_in, C_out])",
        ),
        (_set(0, 2, "channels", [8, 8]), "channels must be a list of 1 ([C])"),
        (_set(0, 2, "channels", [0]), "channels must be positive integers"),
        (
            _set(0, 4, "channels", [8, 6, 12]),
            "cell 0, op 4 (sep_conv_5x5 3->4): gives node 4 12 channels, but op 3 gives it 8",
        ),
        (_set(1, 3, "input", True), "input node True is out of range"),
        (
            lambda p: p.update(
                cells=[[_op("sep_conv_3x3", 0, 2, 8, 8, 8), _op("dil_conv_3x3", 3, 4, 8, 8)]]
            ),
            "cell 0, op 1 (dil_conv_3x3 3->4): reads node 3, which no op writes to",
        ),
        (lambda p: p.update(format="darts"), "'format' is 'darts'; expected 'mg-darts-official'"),
        (lambda p: p.update(primitives=["none"]), "'primitives' is ['none']"),
        (lambda p: p.update(concat=[1, 2]), "'concat' is [1, 2]; expected increasing node"),
        (lambda p: p.update(cell=[]), "unknown genotype keys ['cell']"),
        (lambda p: p.update(cells=[]), "'cells' must be a non-empty list"),
        (lambda p: p["cells"][0][0].pop("channels"), "missing ['channels']"),
    ],
)
def test_genotype_validation_errors(mutate: Mutation, message: str) -> None:
    payload = tiny_payload()
    mutate(payload)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_genotype_json(payload)


def test_odd_widths_where_factorized_reduce_needs_even() -> None:
    # One cell is a reduction cell, so a skip from input 0 is a FactorizedReduce.
    odd_skip = {"cells": [[_op("skip_connect", 0, 2, 7)]]}
    with pytest.raises(ValueError, match=re.escape("needs an even channel count, got 7")):
        validate_genotype_json(odd_skip)
    # With three cells, cell 2 follows reduction cell 1: its input 0 goes through FactorizedReduce.
    payload = tiny_payload()
    payload["cells"][2][0]["channels"] = [9, 6, 14]
    payload["cells"][2][2] = _op("avg_pool_3x3", 0, 3, 9)
    payload["cells"][2][3]["channels"] = [9, 6]
    with pytest.raises(ValueError, match=re.escape("cell 2: follows a reduction cell")):
        validate_genotype_json(payload)


def test_mask_validation_errors() -> None:
    genotype = MGGenotype.from_json(tiny_payload())
    masks = random_masks(genotype)
    validate_masks(genotype, masks)

    wrong_shape = copy.deepcopy(masks)
    wrong_shape[0][0][1] = torch.ones(8, 6, 1, 1)
    expected = (
        "masks, cell 0, op 0 (sep_conv_3x3 0->2), conv pw1: mask shape (8, 6, 1, 1) does not "
        "match the conv weight shape (4, 6, 1, 1)"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        validate_masks(genotype, wrong_shape)
    with pytest.raises(ValueError, match=re.escape(expected)):
        MGNetworkCIFAR(4, 10, genotype, False, in_channels=1, input_size=8, masks=wrong_shape)

    missing_conv = copy.deepcopy(masks)
    missing_conv[1][3] = missing_conv[1][3][:1]
    expected = "masks, cell 1, op 3 (dil_conv_3x3 2->4): expected [M_dw, M_pw], got 1 entries"
    with pytest.raises(ValueError, match=re.escape(expected)):
        validate_masks(genotype, missing_conv)

    extra = copy.deepcopy(masks)
    extra[1][0] = [torch.ones(8, 1, 1, 1)]
    expected = "masks, cell 1, op 0 (skip_connect 0->2): expected [], got 1 entries"
    with pytest.raises(ValueError, match=re.escape(expected)):
        validate_masks(genotype, extra)

    with pytest.raises(ValueError, match="masks cover 2 cells but the genotype has 3"):
        validate_masks(genotype, masks[:2])
    with pytest.raises(ValueError, match=re.escape("masks, cell 2: expected a list of 5 entries")):
        validate_masks(genotype, [*masks[:2], masks[2][:4]])

    not_binary = copy.deepcopy(masks)
    not_binary[2][4][3] = not_binary[2][4][3] * 0.5
    with pytest.raises(ValueError, match="conv pw2: a mask may hold only 0 and 1"):
        validate_masks(genotype, not_binary)


def test_plugin_module_registers_the_format() -> None:
    formats = mgdarts_plugin.register_architecture_formats()
    assert [f.name for f in formats] == ["mg-darts-genotype"]
