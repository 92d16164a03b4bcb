"""The MG-DARTS cell-wise genotype and its weight masks (ALGORITHM.md G.1).

Unlike a DARTS genotype, every cell is its own list of ops, and every op carries
the channel counts that filter-level pruning left it. On disk it is the JSON the
project keeps for the released architectures::

    {"format": "mg-darts-official",
     "primitives": ["skip_connect", "sep_conv_3x3", ...],
     "concat": [2, 3, 4, 5],
     "cells": [[{"op": "sep_conv_3x3", "input": 0, "output": 2, "channels": [18, 20, 18]},
                ...], ...],
     "source": "where it came from (optional)"}

States 0 and 1 of a cell are the outputs of the two previous cells; states 2..5
are its intermediate nodes. ``channels`` is ``[C_in, C_mid, C_out]`` for a
separable conv, ``[C_in, C_out]`` for a dilated conv and ``[C]`` for pools and
skips, which keep the width.

The weight masks are the official nested list ``masks[cell][op]``: ``[]`` for
ops without masked convs, ``[M_dw1, M_pw1, M_dw2, M_pw2]`` for separable convs
and ``[M_dw, M_pw]`` for dilated convs, each a 0/1 tensor shaped like the conv
weight it masks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_TAG = "mg-darts-official"

# Index order matters: it is the column order of the search's op scores.
PRIMITIVES: tuple[str, ...] = (
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
)

INPUT_STATES = 2
NODES = 4
STATES = INPUT_STATES + NODES
DEFAULT_CONCAT: tuple[int, ...] = tuple(range(INPUT_STATES, STATES))

REQUIRED_KEYS: tuple[str, ...] = ("cells",)
# init_channels: the stem width C the cells were searched with (the stem has 3C channels).
OPTIONAL_KEYS: tuple[str, ...] = ("format", "primitives", "concat", "source", "init_channels")
OP_KEYS: tuple[str, ...] = ("op", "input", "output", "channels")

KERNEL_SIZES: dict[str, int] = {
    "sep_conv_3x3": 3,
    "sep_conv_5x5": 5,
    "dil_conv_3x3": 3,
    "dil_conv_5x5": 5,
}

# Names of the masked convs of each op, in the order of the official mask lists.
SEP_CONV_NAMES: tuple[str, ...] = ("dw1", "pw1", "dw2", "pw2")
DIL_CONV_NAMES: tuple[str, ...] = ("dw", "pw")


def masked_conv_names(op: str) -> tuple[str, ...]:
    if op.startswith("sep_conv"):
        return SEP_CONV_NAMES
    if op.startswith("dil_conv"):
        return DIL_CONV_NAMES
    return ()


def channel_count(op: str) -> int:
    """How many entries the ``channels`` list of ``op`` has."""
    if op.startswith("sep_conv"):
        return 3
    if op.startswith("dil_conv"):
        return 2
    return 1


def reduction_cells(layers: int) -> frozenset[int]:
    """Indices of the reduction cells: the first cells of stages 2 and 3."""
    return frozenset((layers // 3, 2 * layers // 3))


def auxiliary_position(layers: int) -> int:
    """The cell after which the evaluation network's auxiliary head sits."""
    return 2 * layers // 3


@dataclass(frozen=True)
class GeneOp:
    op: str
    input: int
    output: int
    channels: tuple[int, ...]

    @property
    def c_in(self) -> int:
        return self.channels[0]

    @property
    def c_out(self) -> int:
        return self.channels[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "input": self.input,
            "output": self.output,
            "channels": list(self.channels),
        }

    def conv_weight_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the masked conv weights of this op, in official mask order."""
        if self.op.startswith("sep_conv"):
            k = KERNEL_SIZES[self.op]
            c_in, c_mid, c_out = self.channels
            return ((c_in, 1, k, k), (c_mid, c_in, 1, 1), (c_mid, 1, k, k), (c_out, c_mid, 1, 1))
        if self.op.startswith("dil_conv"):
            k = KERNEL_SIZES[self.op]
            c_in, c_out = self.channels
            return ((c_in, 1, k, k), (c_out, c_in, 1, 1))
        return ()


Cell = tuple[GeneOp, ...]


def node_widths(cell: Sequence[GeneOp], default: int) -> list[int]:
    """Width of every state of a cell: ``default`` unless an op says otherwise.

    The official rule: each op sets the width of its input to ``channels[0]``
    and of its output to ``channels[-1]``, the later op winning; validation
    guarantees that no two ops disagree.
    """
    widths = [default] * STATES
    for gene in cell:
        widths[gene.input] = gene.c_in
        widths[gene.output] = gene.c_out
    return widths


def active_nodes(cell: Sequence[GeneOp]) -> frozenset[int]:
    """Intermediate nodes that at least one op writes to."""
    return frozenset(gene.output for gene in cell)


@dataclass(frozen=True)
class MGGenotype:
    cells: tuple[Cell, ...]
    concat: tuple[int, ...] = DEFAULT_CONCAT
    source: str | None = None

    @property
    def layers(self) -> int:
        return len(self.cells)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> MGGenotype:
        validate_genotype_json(payload)
        cells = tuple(
            tuple(GeneOp(e["op"], e["input"], e["output"], tuple(e["channels"])) for e in cell)
            for cell in payload["cells"]
        )
        concat = tuple(payload.get("concat", DEFAULT_CONCAT))
        return cls(cells=cells, concat=concat, source=payload.get("source"))

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "format": FORMAT_TAG,
            "primitives": list(PRIMITIVES),
            "concat": list(self.concat),
            "cells": [[gene.to_json() for gene in cell] for cell in self.cells],
        }
        if self.source is not None:
            payload["source"] = self.source
        return payload

    def dense_masks(self) -> list[list[list[torch.Tensor]]]:
        """All-ones masks in the official layout: what an unpruned architecture has."""
        return [
            [[torch.ones(shape) for shape in gene.conv_weight_shapes()] for gene in cell]
            for cell in self.cells
        ]


def load_genotype(path: str | Path) -> MGGenotype:
    try:
        payload = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    return MGGenotype.from_json(payload)


def save_genotype(genotype: MGGenotype, path: str | Path) -> None:
    # indent=1 is the layout of the project's reference files, so saved files diff cleanly.
    Path(path).write_text(json.dumps(genotype.to_json(), indent=1) + "\n")


# ------------------------------------------------------------------ validation


def _is_int(value: Any) -> bool:
    # JSON has no separate bool type in Python's eyes: True would pass isinstance(_, int).
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_header(payload: Mapping[str, Any]) -> None:
    if not isinstance(payload, Mapping):
        raise ValueError(f"an MG-DARTS genotype is a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        allowed = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
        raise ValueError(f"unknown genotype keys {unknown}; allowed keys: {allowed}")
    if "cells" not in payload:
        raise ValueError("an MG-DARTS genotype needs a 'cells' list (one list of ops per cell)")
    if "format" in payload and payload["format"] != FORMAT_TAG:
        raise ValueError(f"'format' is {payload['format']!r}; expected {FORMAT_TAG!r}")
    if "init_channels" in payload and not (
        _is_int(payload["init_channels"]) and payload["init_channels"] >= 1
    ):
        raise ValueError(
            f"'init_channels' is {payload['init_channels']!r}; expected a positive integer"
        )
    primitives = payload.get("primitives", list(PRIMITIVES))
    if not isinstance(primitives, list) or primitives != list(PRIMITIVES):
        raise ValueError(
            f"'primitives' is {primitives!r}; this format's op names mean "
            f"{list(PRIMITIVES)!r}, in that order"
        )
    concat = payload.get("concat", DEFAULT_CONCAT)
    if (
        not isinstance(concat, Sequence)
        or not concat
        or not all(_is_int(n) and INPUT_STATES <= n < STATES for n in concat)
        or list(concat) != sorted(set(concat))
    ):
        raise ValueError(
            f"'concat' is {concat!r}; expected increasing node indices in "
            f"{INPUT_STATES}..{STATES - 1}, such as {list(DEFAULT_CONCAT)}"
        )
    if "source" in payload and not isinstance(payload["source"], str):
        raise ValueError(f"'source' must be a string, got {type(payload['source']).__name__}")
    cells = payload["cells"]
    if not isinstance(cells, list) or not cells:
        raise ValueError("'cells' must be a non-empty list with one list of ops per cell")


def _validate_op(where: str, entry: Any) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with keys {list(OP_KEYS)}, got {entry!r}")
    keys = set(entry)
    if keys != set(OP_KEYS):
        missing = sorted(set(OP_KEYS) - keys)
        extra = sorted(keys - set(OP_KEYS))
        raise ValueError(
            f"{where}: an op has exactly the keys {list(OP_KEYS)}; "
            f"missing {missing}, unknown {extra}"
        )
    op = entry["op"]
    if op not in PRIMITIVES:
        raise ValueError(f"{where}: unknown op {op!r}; known ops: {', '.join(PRIMITIVES)}")
    src, dst = entry["input"], entry["output"]
    if not _is_int(src) or not 0 <= src < STATES - 1:
        raise ValueError(f"{where} ({op}): input node {src!r} is out of range 0..{STATES - 2}")
    if not _is_int(dst) or not INPUT_STATES <= dst < STATES:
        raise ValueError(
            f"{where} ({op}): output node {dst!r} is out of range {INPUT_STATES}..{STATES - 1}"
        )
    if src >= dst:
        raise ValueError(
            f"{where} ({op}): input node {src} must come before output node {dst} "
            "(cells are acyclic)"
        )
    channels = entry["channels"]
    expected = channel_count(op)
    if not isinstance(channels, list) or len(channels) != expected:
        layout = {3: "[C_in, C_mid, C_out]", 2: "[C_in, C_out]", 1: "[C]"}[expected]
        raise ValueError(
            f"{where} ({op} {src}->{dst}): channels must be a list of {expected} "
            f"({layout}) for {op}, got {channels!r}"
        )
    if not all(_is_int(c) and c > 0 for c in channels):
        raise ValueError(
            f"{where} ({op} {src}->{dst}): channels must be positive integers, got {channels!r}"
        )


def _validate_cell(index: int, cell: Any, reduction: bool, reduction_prev: bool) -> None:
    name = f"cell {index}"
    if not isinstance(cell, list) or not cell:
        raise ValueError(f"{name}: expected a non-empty list of ops, got {cell!r}")
    for k, entry in enumerate(cell):
        _validate_op(f"{name}, op {k}", entry)
    genes = [GeneOp(e["op"], e["input"], e["output"], tuple(e["channels"])) for e in cell]

    # Every op fixes the width of its two ends; disagreeing ops cannot be built.
    width_of: dict[int, tuple[int, int]] = {}  # node -> (width, op index that set it)
    for k, gene in enumerate(genes):
        for node, width in ((gene.input, gene.c_in), (gene.output, gene.c_out)):
            if node in width_of and width_of[node][0] != width:
                other_width, other = width_of[node]
                raise ValueError(
                    f"{name}, op {k} ({gene.op} {gene.input}->{gene.output}): gives node {node} "
                    f"{width} channels, but op {other} gives it {other_width}"
                )
            width_of.setdefault(node, (width, k))

    written = active_nodes(genes)
    for k, gene in enumerate(genes):
        if gene.input >= INPUT_STATES and gene.input not in written:
            raise ValueError(
                f"{name}, op {k} ({gene.op} {gene.input}->{gene.output}): reads node "
                f"{gene.input}, which no op writes to"
            )
        stride = 2 if reduction and gene.input < INPUT_STATES else 1
        if gene.op == "skip_connect" and stride == 2 and gene.c_in % 2:
            raise ValueError(
                f"{name}, op {k} (skip_connect {gene.input}->{gene.output}): a stride-2 skip is a "
                f"FactorizedReduce, which needs an even channel count, got {gene.c_in}"
            )
    if reduction_prev and 0 in width_of and width_of[0][0] % 2:
        raise ValueError(
            f"{name}: follows a reduction cell, so its input 0 goes through FactorizedReduce, "
            f"which needs an even width; op {width_of[0][1]} makes it {width_of[0][0]}"
        )


def validate_genotype_json(payload: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` saying what is wrong with ``payload``, naming cell and op."""
    _validate_header(payload)
    cells = payload["cells"]
    reductions = reduction_cells(len(cells))
    concat = set(payload.get("concat", DEFAULT_CONCAT))
    for index, cell in enumerate(cells):
        _validate_cell(index, cell, index in reductions, index - 1 in reductions)
        if not concat & {entry["output"] for entry in cell}:
            raise ValueError(
                f"cell {index}: none of the concatenated nodes {sorted(concat)} has an op, "
                "so the cell would have no output"
            )


# ----------------------------------------------------------------------- masks


def load_masks(path: str | Path) -> list[list[list[torch.Tensor]]]:
    """Read weight masks saved with ``torch.save`` (the official files were saved on a GPU)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _describe(gene: GeneOp) -> str:
    return f"{gene.op} {gene.input}->{gene.output}"


def validate_masks(genotype: MGGenotype, masks: Any) -> None:
    """Check the nesting ``masks[cell][op][conv]`` and every mask's shape and values."""
    if not isinstance(masks, Sequence) or isinstance(masks, torch.Tensor):
        raise ValueError(
            f"masks must be a nested list [cell][op][conv], got {type(masks).__name__}"
        )
    if len(masks) != genotype.layers:
        raise ValueError(f"masks cover {len(masks)} cells but the genotype has {genotype.layers}")
    for c, (cell, cell_masks) in enumerate(zip(genotype.cells, masks, strict=True)):
        if not isinstance(cell_masks, Sequence) or len(cell_masks) != len(cell):
            got = len(cell_masks) if isinstance(cell_masks, Sequence) else type(cell_masks).__name__
            raise ValueError(
                f"masks, cell {c}: expected a list of {len(cell)} entries (one per op), got {got}"
            )
        for k, (gene, op_masks) in enumerate(zip(cell, cell_masks, strict=True)):
            names = masked_conv_names(gene.op)
            where = f"masks, cell {c}, op {k} ({_describe(gene)})"
            if not isinstance(op_masks, Sequence) or len(op_masks) != len(names):
                layout = "[]" if not names else "[" + ", ".join(f"M_{n}" for n in names) + "]"
                got = (
                    f"{len(op_masks)} entries"
                    if isinstance(op_masks, Sequence)
                    else type(op_masks).__name__
                )
                raise ValueError(f"{where}: expected {layout}, got {got}")
            for name, mask, shape in zip(names, op_masks, gene.conv_weight_shapes(), strict=True):
                if not isinstance(mask, torch.Tensor):
                    raise ValueError(
                        f"{where}, conv {name}: expected a tensor, got {type(mask).__name__}"
                    )
                if tuple(mask.shape) != shape:
                    raise ValueError(
                        f"{where}, conv {name}: mask shape {tuple(mask.shape)} does not match "
                        f"the conv weight shape {shape}"
                    )
                if not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError(f"{where}, conv {name}: a mask may hold only 0 and 1")


def mask_zeros(masks: Sequence[Sequence[Sequence[torch.Tensor]]]) -> int:
    """Weights the masks remove."""
    return sum(int((m == 0).sum()) for cell in masks for op in cell for m in op)


def mask_size(masks: Sequence[Sequence[Sequence[torch.Tensor]]]) -> int:
    """Weights the masks cover: every sep/dil conv weight."""
    return sum(math.prod(m.shape) for cell in masks for op in cell for m in op)
