"""The DARTS genotype: which op feeds each intermediate node of the two cell types.

On disk a genotype is JSON with exactly DARTS's lists::

    {"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}

Entries come in pairs: entries ``2i`` and ``2i + 1`` are the two inputs of
intermediate node ``i``, whose state index is ``i + 2`` (states 0 and 1 are the
outputs of the two previous cells).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.darts.ops import OPS

GENOTYPE_KEYS: tuple[str, ...] = ("normal", "normal_concat", "reduce", "reduce_concat")

Edges = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Genotype:
    normal: Edges
    normal_concat: tuple[int, ...]
    reduce: Edges
    reduce_concat: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "normal": [[op, index] for op, index in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, index] for op, index in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Genotype:
        validate_genotype_json(d)
        return cls(
            normal=tuple((op, index) for op, index in d["normal"]),
            normal_concat=tuple(d["normal_concat"]),
            reduce=tuple((op, index) for op, index in d["reduce"]),
            reduce_concat=tuple(d["reduce_concat"]),
        )


def _is_int(value: Any) -> bool:
    # JSON true/false load as bool, which Python counts as int; they are never indices.
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_edges(key: str, edges: Any) -> int:
    """Check one cell's edge list and return its number of intermediate nodes."""
    if not isinstance(edges, (list, tuple)):
        # ValueError even for wrong types: the format contract promises ValueError.
        raise ValueError(f"{key} must be a list of [op, input] pairs, got {type(edges).__name__}")
    if not edges or len(edges) % 2:
        raise ValueError(
            f"{key} has {len(edges)} entries; DARTS cells list 2 entries (op, input) per "
            "intermediate node, so the count must be even and at least 2"
        )
    for position, entry in enumerate(edges):
        where = f"{key}[{position}]"
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"{where} must be an [op, input] pair, got {entry!r}")
        op, index = entry
        if op not in OPS:
            raise ValueError(f"{where}: unknown op {op!r}; known ops: {', '.join(OPS)}")
        if not _is_int(index):
            raise ValueError(f"{where}: input index must be an integer, got {index!r}")
        state = position // 2 + 2
        if not 0 <= index < state:
            raise ValueError(
                f"{where}: input index {index} is out of range for node {state}, which can "
                f"read states 0..{state - 1} (0 and 1 are the cell inputs)"
            )
    return len(edges) // 2


def _validate_concat(key: str, concat: Any, nodes: int) -> None:
    if not isinstance(concat, (list, tuple)) or not concat:
        raise ValueError(f"{key} must be a non-empty list of node indices, got {concat!r}")
    # Only intermediate nodes may be concatenated: in a reduction cell the inputs
    # (states 0 and 1) still have the previous, larger spatial size.
    valid = range(2, nodes + 2)
    for index in concat:
        if not _is_int(index) or index not in valid:
            raise ValueError(
                f"{key}: index {index!r} is invalid; this cell's intermediate nodes are "
                f"{valid.start}..{valid.stop - 1}"
            )
    if len(set(concat)) != len(concat):
        raise ValueError(f"{key} lists a node more than once: {list(concat)}")


def validate_genotype_json(d: Any) -> None:
    """Raise ``ValueError`` naming the first problem with a genotype JSON payload."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a genotype must be a JSON object, got {type(d).__name__}")
    for key in GENOTYPE_KEYS:
        if key not in d:
            raise ValueError(
                f"genotype is missing key {key!r} (required keys: {', '.join(GENOTYPE_KEYS)})"
            )
    for cell in ("normal", "reduce"):
        nodes = _validate_edges(cell, d[cell])
        _validate_concat(f"{cell}_concat", d[f"{cell}_concat"], nodes)


def load_genotype(path: str | Path) -> Genotype:
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    try:
        return Genotype.from_json(payload)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def save_genotype(genotype: Genotype, path: str | Path) -> None:
    Path(path).write_text(json.dumps(genotype.to_json(), indent=2) + "\n", encoding="utf-8")


# The DARTS V2 cell (second-order DARTS on CIFAR-10, Liu et al. 2019), a common reference.
DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)
