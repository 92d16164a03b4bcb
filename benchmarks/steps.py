"""One search step and one evaluation training step of every method, on one shared size.

The benchmarks (``test_bench_steps.py``) and the table script (``perf_table.py``) time
these. Each step is the methods' own code: DARTS's ``search_step``, MG-DARTS's
``MGDartsSearch.step`` inside a phase started by the search itself, and, for NNI, NNI's
mutated DARTS supernet stepped the way NNI's DARTS strategy steps it (a full backward
in the architecture step; see ``nni_darts_breakdown.py``).
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.components import (
    DatasetInfo,
    NetworkSpec,
    SearchBudget,
    SearchContext,
    SearchData,
    SupernetSpec,
)

# The digits default suite's search size (budget "small").
SPEC = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=4)
BATCH = 96
# The small budget's evaluation network, and the architecture MG-DARTS found in the
# default suite (seed 0, run ce299d9f3522e92f), copied out of its run folder.
EVAL_SPEC = NetworkSpec(in_channels=1, num_classes=10, input_size=8, channels=12, layers=5)
MG_DARTS_ARCH = (
    Path(__file__).resolve().parents[1] / "results" / "performance" / "mg-darts-digits-seed0"
)

SEARCH_ROWS = ("darts", "darts-2nd", "mg-darts-1-stage", "mg-darts-3-stages", "nni-darts")
ROW_TITLES = {
    "darts": "DARTS, first order",
    "darts-2nd": "DARTS, second order",
    "mg-darts-1-stage": "MG-DARTS, single stage",
    "mg-darts-3-stages": "MG-DARTS, 3 stages (mean over stages)",
    "nni-darts": "NNI 3.0 DARTS",
}

Step = Callable[[], None]


CPU = torch.device("cpu")


def batch(
    spec: SupernetSpec | NetworkSpec, size: int, seed: int, device: torch.device = CPU
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, spec.in_channels, spec.input_size, spec.input_size, generator=g)
    labels = torch.randint(0, spec.num_classes, (size,), generator=g)
    return images.to(device), labels.to(device)


def median_seconds(steps: list[Step], repeats: int) -> float:
    """The median over ``repeats`` of the mean time of one call of each of ``steps``."""
    for step in steps:
        step()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for step in steps:
            step()
        times.append((time.perf_counter() - start) / len(steps))
    return statistics.median(times)


def in_fresh_process(module: str, *args: str) -> dict[str, float]:
    """Runs ``python -m module *args`` and reads the JSON object on its last output line.

    Each measurement gets a process of its own, so its peak memory is its own.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ search steps


def search_steps(
    row: str, spec: SupernetSpec = SPEC, size: int = BATCH, device: torch.device = CPU
) -> list[Step]:
    """The search step(s) of ``row``: one per stage for a multi-stage search, else one."""
    torch.manual_seed(0)
    if row in ("darts", "darts-2nd"):
        return [_darts_step(row == "darts-2nd", spec, size, device)]
    if row.startswith("mg-darts"):
        return _mg_darts_steps(1 if row == "mg-darts-1-stage" else 3, spec, size, device)
    if row == "nni-darts":
        return [_nni_darts_step(spec, size, device)]
    raise ValueError(f"unknown row {row!r}; rows: {', '.join(SEARCH_ROWS)}")


def _darts_step(second_order: bool, spec: SupernetSpec, size: int, device: torch.device) -> Step:
    from baselines.darts.method import Architect, Darts, search_step
    from baselines.darts.search_space import DartsSupernet

    options = Darts("darts", second_order).default_options()
    model = DartsSupernet(spec).to(device)
    architect = Architect(model, options, second_order)
    w_opt = torch.optim.SGD(
        model.weight_parameters(),
        lr=options["w_lr"],
        momentum=options["w_momentum"],
        weight_decay=options["w_weight_decay"],
    )
    train, valid = batch(spec, size, 1, device), batch(spec, size, 2, device)
    model.train()
    return lambda: search_step(
        model, architect, w_opt, options["w_lr"], options["grad_clip"], train, valid
    )


def _mg_darts_steps(stages: int, spec: SupernetSpec, size: int, device: torch.device) -> list[Step]:
    from mgas_bench.registry import build_registry
    from plugins.mgdarts.method import MGDartsSearch

    registry = build_registry()
    options = {**registry.get("method", "mg-darts").default_options(), "stages": stages}
    ctx = SearchContext(
        method="mg-darts",
        options=options,
        budget=SearchBudget(epochs=4, batch_size=size, cells=spec.cells, channels=spec.channels),
        data=SearchData(
            DatasetInfo(spec.num_classes, (spec.in_channels, spec.input_size, spec.input_size)),
            # No loaders: the steps get their batches directly.
            weights=[],  # type: ignore[arg-type]
            arch=[],  # type: ignore[arg-type]
        ),
        device=device,
        seed=0,
        run_dir=Path(tempfile.gettempdir()),
        log=logging.getLogger("benchmarks"),
        components=registry,
        epoch_ended=lambda *args, **kwargs: None,
        stage_ended=lambda *args, **kwargs: None,
    )
    search = MGDartsSearch(ctx)
    images, labels = batch(spec, size, 1, device)
    steps = []
    for plan in search.plan():
        if plan.stage == 0:
            continue  # the global phase steps the whole network, as the last stage does
        phase = search.start_phase(plan)

        def step(plan=plan, phase=phase) -> None:
            search.step(
                images,
                labels,
                plan.end,
                plan.own_cells,
                phase.head,
                phase.optimisers,
                phase.lam.lam,
                weights_only=False,
            )

        steps.append(step)
    search.model.train()
    return steps


def nni_darts_supernet(spec: SupernetSpec) -> tuple[nn.Module, list[nn.Parameter], list]:
    """NNI's DARTS space at ``spec``, mutated by NNI's DARTS strategy: net, alphas, weights."""
    from nni.nas import strategy

    from baselines.nni_oneshot.space import SizedDartsSpace

    net = strategy.DARTS().mutate_model(SizedDartsSpace(spec))
    alphas = {
        id(p): p
        for module in net.modules()
        if module is not net and hasattr(module, "arch_parameters")
        for p in module.arch_parameters()
    }
    weights = [p for p in net.parameters() if id(p) not in alphas]
    return net, list(alphas.values()), weights


def _nni_darts_step(spec: SupernetSpec, size: int, device: torch.device) -> Step:
    net, alphas, weights = nni_darts_supernet(spec)
    net.to(device)
    arch_opt = torch.optim.Adam(alphas, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)
    (x, y), (xv, yv) = batch(spec, size, 1, device), batch(spec, size, 2, device)
    net.train()

    def step() -> None:
        arch_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xv), yv).backward()  # NNI's DARTS: a full backward here
        arch_opt.step()
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()

    return step


# -------------------------------------------------------------- evaluation steps


def eval_network(row: str, spec: NetworkSpec = EVAL_SPEC) -> nn.Module:
    """DARTS V2 for the DARTS-family rows; the suite's MG-DARTS network for MG-DARTS rows."""
    from mgas_bench.execution import load_architecture
    from mgas_bench.registry import build_registry

    torch.manual_seed(0)
    registry = build_registry()
    if row.startswith("mg-darts"):
        arch = load_architecture(MG_DARTS_ARCH, "mg-darts-genotype")
    else:
        from baselines.darts.genotype import DARTS_V2
        from mgas_bench.components import Architecture

        arch = Architecture("darts-genotype", DARTS_V2.to_json())
    return registry.get("architecture_format", arch.format).build_network(arch, spec)


def eval_step(
    row: str,
    size: int = BATCH,
    device: torch.device = CPU,
    network: nn.Module | None = None,
    spec: NetworkSpec = EVAL_SPEC,
) -> Step:
    """One training step of the evaluation network, as the suite's evaluator takes it.

    ``network`` (built for ``spec``) replaces the row's own network, for other sizes.
    """
    model = (eval_network(row) if network is None else network).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    images, labels = batch(spec, size, 3, device)

    def step() -> None:
        logits, aux = model(images)
        loss = F.cross_entropy(logits, labels)
        if aux is not None:
            loss = loss + 0.4 * F.cross_entropy(aux, labels)  # the evaluator's default weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step
