"""NNI's exported DARTS architecture, converted to and from the suite's DARTS genotype.

NNI's DARTS space (``nni.nas.hub.pytorch.DARTS``) exports a flat dict with two
entries per incoming edge of each intermediate node::

    {"normal/op_2_0": "sep_conv_3x3", "normal/input_2_0": [0],
     "normal/op_2_1": "skip_connect", "normal/input_2_1": [1], ...,
     "reduce/op_5_1": "max_pool_3x3", "reduce/input_5_1": [4]}

Node and input numbering is DARTS's own (states 0 and 1 are the two previous cells,
node ``i`` is state ``i``), and every intermediate node is concatenated, so the
conversion is a relabelling. Nothing here imports NNI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from baselines.darts.genotype import Genotype, validate_genotype_json

CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
EDGES_PER_NODE = 2
_KEY = re.compile(r"^(normal|reduce)/(op|input)_(\d+)_(\d+)$")


def looks_like_nni_sample(payload: Any) -> bool:
    return (
        isinstance(payload, Mapping)
        and bool(payload)
        and all(isinstance(k, str) and _KEY.match(k) for k in payload)
    )


def genotype_from_nni_sample(sample: Mapping[str, Any]) -> Genotype:
    """The DARTS genotype of an NNI DARTS-space sample; ``ValueError`` says what is wrong."""
    if not isinstance(sample, Mapping):
        raise ValueError(f"an NNI sample must be a dict, got {type(sample).__name__}")
    unknown = sorted(k for k in sample if not (isinstance(k, str) and _KEY.match(k)))
    if unknown:
        raise ValueError(
            f"not an NNI DARTS-space sample: unexpected key(s) {', '.join(map(repr, unknown))}; "
            "expected keys like 'normal/op_2_0' and 'normal/input_2_0'"
        )
    cells: dict[str, list[list[Any]]] = {}
    concat: dict[str, list[int]] = {}
    for cell in CELL_TYPES:
        nodes = sorted({int(_KEY.match(k)[3]) for k in sample if k.startswith(f"{cell}/")})
        if not nodes:
            raise ValueError(f"the NNI sample has no {cell!r} cell entries")
        if nodes != list(range(2, 2 + len(nodes))):
            raise ValueError(f"{cell} cell: nodes {nodes} are not numbered 2, 3, ... as in DARTS")
        edges = []
        for node in nodes:
            for k in range(EDGES_PER_NODE):
                op_key, input_key = f"{cell}/op_{node}_{k}", f"{cell}/input_{node}_{k}"
                if op_key not in sample or input_key not in sample:
                    raise ValueError(f"the NNI sample lacks {op_key!r} or {input_key!r}")
                edges.append([sample[op_key], _single_input(input_key, sample[input_key])])
        cells[cell] = edges
        concat[cell] = nodes
    payload = {
        "normal": cells["normal"],
        "normal_concat": concat["normal"],
        "reduce": cells["reduce"],
        "reduce_concat": concat["reduce"],
    }
    validate_genotype_json(payload)
    return Genotype.from_json(payload)


def _single_input(key: str, value: Any) -> Any:
    # NNI's InputChoice exports a list of the chosen inputs; DARTS edges have exactly one.
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"{key}: expected one chosen input, got {value!r}")
        return value[0]
    return value
