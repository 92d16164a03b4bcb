"""MG-DARTS search: multi-stage, one-level, adaptive pruning at three granularities.

Follows ALGORITHM.md D (stages, warm-up, commit rounds, size-target stop, the global
phase), C.3 (adaptive λ), E (regrowth) with these deliberate differences from the
official code: the whole search reads at most the budget's epochs of data, split
into equal rounds (:mod:`plugins.mgdarts.budget`); optimisers are rebuilt after every
structural change (I.5); regrowth draws from a seeded generator (I.20); the search
trains on both halves of the search split and never sees the test set (I.16); the
global phase commits all gates at once each round, like the stages, instead of one op
at a time, and ends at a relative size target instead of an absolute 0.1 M.

The gates call the discretizers named by option ``discretizers`` (registered
components); granularities beyond the supernet's own three come from plugins through
:meth:`mgas_bench.components.Granularity.attach`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.components import (
    Architecture,
    Method,
    SearchContext,
    SearchResult,
    UnitGates,
    UnitGroup,
)
from plugins.mgdarts.budget import plan_rounds, round_batches
from plugins.mgdarts.genotype import FORMAT_TAG, PRIMITIVES
from plugins.mgdarts.heads import StageHead
from plugins.mgdarts.regrowth import choose_regrowth, regrowth_distribution
from plugins.mgdarts.schedule import AdaptiveLambda
from plugins.mgdarts.search_ops import DilConv, SepConv
from plugins.mgdarts.supernet import GRANULARITIES, MGSupernet


class MGDarts(Method):
    name = "mg-darts"
    description = "MG-DARTS: multi-granularity pruning search (operations, filters, weights)"

    def default_options(self) -> dict[str, Any]:
        return {
            "stages": 3,
            # The last phase of the reference: prune the whole network after the stages.
            "global_phase": True,
            "global_target": 0.5,  # the global phase ends below this share of its start size
            # operation / filter / weight, and any granularity a plugin registers with
            # an ``attach`` (its discretizer: the only one registered for it, or named below).
            "granularities": list(GRANULARITIES),
            "discretizers": dict(DEFAULT_DISCRETIZERS),
            "regrowth": True,
            # Physical channel shrinking after every phase (ALGORITHM.md D.5).
            "shrink": True,
            "adaptive_pruning": True,
            # Used only with adaptive_pruning = false: share of alive units kept per round.
            "retention": {"operation": 0.7, "filter": 0.8, "weight": 0.9},
            # The schedule defaults suit searches of a few epochs (the suite's CPU budgets);
            # REFERENCE_SCHEDULE holds the official code's values, for GPU-length searches.
            "warmup_epochs": 1,  # rounds of each phase that train weights only
            "stage_target": 0.7,  # a stage ends once its size proxy is below this share
            "regrow_ratio": 0.5,
            "lam0": 5e-3,
            "lam_start": 5e-3,  # λ at the start of each phase
            "c0": 2.0,
            "n_thre": 12,
            "w_lr": 0.01,
            "w_momentum": 0.9,
            "w_weight_decay": 3e-4,
            "grad_clip": 5.0,
            "alpha_lr": 1.0,
            "beta_lr": 1.0,
            "threshold_lr": {"operation": 0.1, "filter": 0.1, "weight": 0.05},
            # Thresholds restart here every phase; near sigmoid(0) = 0.5, scores prune fast.
            "threshold_init": {"operation": 0.45, "filter": 0.45, "weight": 0.0},
        }

    def search(self, ctx: SearchContext) -> SearchResult:
        return MGDartsSearch(ctx).run()


class MGDartsSearch:
    """One MG-DARTS search: its supernet, gates and schedule, run phase by phase."""

    def __init__(self, ctx: SearchContext):
        self.ctx, self.opts = ctx, dict(ctx.options)
        granularities = list(self.opts["granularities"])
        native = [g for g in granularities if g in GRANULARITIES]
        torch.manual_seed(ctx.seed)
        spec = ctx.supernet_spec()
        self.model = MGSupernet.from_options(spec, {**self.opts, "granularities": native})
        ctx.place(self.model)
        self.discretizers = {g: self._discretizer(g) for g in granularities}
        self.model.use_discretizers({g: self.discretizers[g] for g in native})
        self.extra_gates: dict[str, UnitGates] = {
            g: self._attach(g) for g in granularities if g not in GRANULARITIES
        }
        self.regrowth_rng = torch.Generator().manual_seed(ctx.seed)
        self.epoch = 0
        stages = int(self.opts["stages"])
        if not 1 <= stages <= self.model.num_cells:
            raise ValueError(f"stages must be between 1 and {self.model.num_cells}, got {stages}")
        self.stage_ends = self.model.stage_ends(stages)
        self.batches_per_epoch = self._batches_per_epoch()
        self.rounds = plan_rounds(
            ctx.budget.epochs,
            self.batches_per_epoch,
            phases=stages + int(bool(self.opts["global_phase"])),
            # Regrowth follows every stage from the second on (E).
            regrowth_rounds=stages - 1 if self.opts["regrowth"] else 0,
        )

    def _discretizer(self, granularity: str) -> Callable[[UnitGroup], torch.Tensor]:
        components = self.ctx.components
        components.get("granularity", granularity)  # an unknown one lists the known ones
        named = {**DEFAULT_DISCRETIZERS, **self.opts.get("discretizers", {})}
        name = named.get(granularity)
        if name is None:
            candidates = [
                n
                for n in components.names("discretizer")
                if components.get("discretizer", n).granularity == granularity
            ]
            if len(candidates) != 1:
                raise ValueError(
                    f"name the discretizer for granularity {granularity!r} in option "
                    f"discretizers; registered for it: {', '.join(candidates) or '(none)'}"
                )
            name = candidates[0]
        discretizer = components.get("discretizer", name)
        if discretizer.granularity != granularity:
            raise ValueError(
                f"discretizer {name!r} decides {discretizer.granularity!r} units, "
                f"not {granularity!r}"
            )
        return functools.partial(discretizer.discretize, options={})

    def _attach(self, granularity: str) -> UnitGates:
        component = self.ctx.components.get("granularity", granularity)
        attach = getattr(component, "attach", None)
        gates = attach(self.model) if attach else None
        if gates is None:
            raise ValueError(
                f"granularity {granularity!r} cannot be searched by mg-darts: it has no "
                f"gates to attach (Granularity.attach returned None); the supernet gates "
                f"{', '.join(GRANULARITIES)} natively"
            )
        gates.use_discretizer(self.discretizers[granularity])
        return gates

    # ------------------------------------------------------------------ stages

    def run(self) -> SearchResult:
        saved = self.ctx.checkpoints.restore()
        if saved is None:
            self.progress = _Progress(start_size=self.model.size_proxy())
        else:
            self._load(saved)
        for index, plan in enumerate(self.plan()):
            if index < self.progress.phases_done:
                continue
            if self.progress.current is None:
                self.progress.current = self.start_phase(plan)
            phase = self.progress.current
            while not phase.finished(self.rounds.rounds_per_phase):
                self._phase_round(phase)
                self._checkpoint()
            self._end_phase(phase)
            self.progress.phases_done += 1
            self.progress.current = None
            self._checkpoint(stage=plan.stage)
        metrics = {
            "size_proxy_ratio": self.model.size_proxy() / self.progress.start_size,
            "alive_ops": float(self.model.num_alive_ops()),
            "regrown_ops": float(self.progress.regrown),
        }
        for granularity, gates in self.extra_gates.items():
            metrics[f"alive_{granularity}_units"] = float(sum(g.mask.sum() for g in gates.groups()))
        return SearchResult(self.export(), metrics)

    def plan(self) -> list[_PhasePlan]:
        """The stages, then the global phase (stage 0, ALGORITHM.md C.2) if it is on."""
        last = self.model.num_cells - 1
        plans, first_cell = [], 0
        for stage, end in enumerate(self.stage_ends, start=1):
            plans.append(
                _PhasePlan(stage, end, range(first_cell, end + 1), float(self.opts["stage_target"]))
            )
            first_cell = end + 1
        if self.opts["global_phase"]:
            plans.append(
                _PhasePlan(0, last, range(last + 1), float(self.opts["global_target"]), 0.5)
            )
        return plans

    # ------------------------------------------------------------- checkpoints

    def _checkpoint(self, stage: int | None = None) -> None:
        # Live objects, pickled together: the optimisers keep pointing at the (possibly
        # shrunk) supernet's and the head's parameters when they are read back.
        self.ctx.checkpoints.save(
            {
                "model": self.model,
                "extra_gates": self.extra_gates,
                "regrowth_rng": self.regrowth_rng.get_state(),
                "epoch": self.epoch,
                "progress": self.progress,
            },
            epoch=self.epoch,
            stage=stage,
        )

    def _load(self, saved: dict[str, Any]) -> None:
        for gates in self.extra_gates.values():
            gates.detach()
        self.model = saved["model"]
        self.extra_gates = saved["extra_gates"]
        self.regrowth_rng.set_state(saved["regrowth_rng"])
        self.epoch = saved["epoch"]
        self.progress = saved["progress"]

    def _shrink(self, end: int) -> dict[str, float]:
        """Physically narrow cells 0..end (D.5); the next phase rebuilds its optimisers."""
        if not self.opts["shrink"]:
            return {}
        report = self.model.shrink(end)
        self.ctx.place(self.model)  # the narrowed convolutions are new modules
        self.ctx.log.info("shrank cells 0..%d: widths %s", end, report.widths())
        return {
            "params_before_shrink": float(report.params_before),
            "params": float(report.params_after),
        }

    def _head(self, end: int) -> nn.Module:
        model = self.model
        return self.ctx.place(
            StageHead(
                model.cell_out_channels(end), model.spec.num_classes, model.cell_out_size(end)
            )
        )

    def start_phase(self, plan: _PhasePlan) -> _PhaseState:
        """A stage (or the global phase) begins: fresh thresholds, head, optimisers and λ."""
        model, opts, adaptive = self.model, self.opts, self.opts["adaptive_pruning"]
        final = plan.end == model.num_cells - 1
        head = None if final else self._head(plan.end)
        # Thresholds restart each phase, earlier cells included: that is what re-prunes them.
        self._reset_thresholds(plan.end, adaptive)
        lam = AdaptiveLambda(
            float(opts["lam0"]),
            float(opts["c0"]),
            int(opts["n_thre"]),
            freeze_factor=plan.freeze_factor,
            # Fixed-ratio pruning has no sparsity pressure at all: λ stays 0.
            lam_start=float(opts["lam_start"]) if adaptive else 0.0,
        )
        start_size = model.size_proxy(plan.end)
        return _PhaseState(
            plan=plan,
            head=head,
            optimisers=self._optimisers(plan.end, head, adaptive),
            lam=lam,
            start_size=start_size,
            start_ops=model.num_alive_ops(plan.end),
            target=plan.target_ratio * start_size,
            warmup=min(int(opts["warmup_epochs"]), self.rounds.rounds_per_phase - 1),
        )

    def _phase_round(self, phase: _PhaseState) -> None:
        """One round of a phase: weights only during warm-up, then search and a commit."""
        model, plan = self.model, phase.plan
        end, own_cells, head = plan.end, plan.own_cells, phase.head
        if phase.rounds_done < phase.warmup:
            self._round(end, own_cells, head, phase.optimisers, lam=0.0, weights_only=True)
            phase.rounds_done += 1
            return
        ce, r_op = self._round(
            end, own_cells, head, phase.optimisers, phase.lam.lam, weights_only=False
        )
        phase.rounds_done += 1
        before = model.num_alive_ops(end)
        if self.opts["adaptive_pruning"]:
            model.commit(upto=end)
            for gates in self.extra_gates.values():
                gates.commit(self._groups_upto(gates, end))
            phase.lam.update(before - model.num_alive_ops(end), ce, r_op)
        else:
            self._fixed_ratio_round(end)
        phase.reached_target = model.size_proxy(end) < phase.target

    def _end_phase(self, phase: _PhaseState) -> None:
        """Report the phase; after stage 2 on, regrow (E); shrink (D.5)."""
        model, plan = self.model, phase.plan
        end = plan.end
        alive = model.num_alive_ops(end)
        stats = {
            "size_proxy": model.size_proxy(end),
            "size_proxy_start": phase.start_size,
            "alive_ops": float(alive),
            "pruned_ops": float(phase.start_ops - alive),
            "lambda": phase.lam.lam,
        }
        if plan.stage >= 1:
            regrown = 0
            if self.opts["regrowth"] and plan.stage >= 2:
                regrown = self._regrow(end, phase.head, stats["pruned_ops"])
            self.progress.regrown += regrown
            stats["regrown_ops"] = float(regrown)
        self.ctx.stage_ended(plan.stage, {**stats, **self._shrink(end)})

    @staticmethod
    def _groups_upto(gates: UnitGates, end: int) -> list[UnitGroup]:
        return [g for g in gates.groups() if g.meta.get("cell", 0) <= end]

    def _reset_thresholds(self, end: int, adaptive: bool) -> None:
        start = self.opts["threshold_init"]

        def value(granularity: str) -> float:
            return float(start.get(granularity, 0.0)) if adaptive else THRESHOLD_OFF

        self.model.reset_thresholds(upto=end, **{g: value(g) for g in GRANULARITIES})
        with torch.no_grad():
            for granularity, gates in self.extra_gates.items():
                for threshold in gates.threshold_parameters():
                    threshold.fill_(value(granularity))

    def _threshold_regulariser(self, end: int) -> torch.Tensor:
        """R_thr of the supernet plus exp(-t) over the plugin gates' alive groups."""
        total = self.model.threshold_regulariser(upto=end)
        for gates in self.extra_gates.values():
            for group in self._groups_upto(gates, end):
                if group.mask.sum() > 0:
                    total = total + torch.exp(-group.meta["threshold"]).sum()
        return total

    def _fixed_ratio_round(self, end: int) -> None:
        """Adaptive pruning off: keep a fixed share of each group's alive units, by score."""
        pruner = self.ctx.components.get("pruner", "fixed-ratio")
        sources: dict[str, list[UnitGroup]] = {
            g: self.model.unit_groups(g) for g in self.model.granularities
        }
        sources.update({g: gates.groups() for g, gates in self.extra_gates.items()})
        for granularity, all_groups in sources.items():
            groups = [g for g in all_groups if g.meta.get("cell", 0) <= end and g.mask.sum() > 0]
            retention = float(self.opts["retention"].get(granularity, 1.0))
            for group in groups:
                alive = int(group.mask.sum())
                keep = max(1, math.ceil(retention * alive)) / group.mask.numel()
                pruner.prune([group], lambda g: g.mask.bool(), {"retention": keep})
            if granularity in self.extra_gates:
                # Thresholds are off, so this only passes the new masks on to what
                # depends on them (for example the ops of a pruned edge).
                self.extra_gates[granularity].commit(groups)

    def _optimisers(self, end: int, head, adaptive: bool) -> dict[str, torch.optim.Optimizer]:
        model, opts = self.model, self.opts
        weights = model.weight_parameters() + (list(head.parameters()) if head else [])
        optimisers = {
            "weights": torch.optim.SGD(
                weights,
                lr=opts["w_lr"],
                momentum=opts["w_momentum"],
                weight_decay=opts["w_weight_decay"],
            ),
            "alpha": torch.optim.SGD(
                model.alpha_parameters(end), lr=opts["alpha_lr"], momentum=0.9
            ),
        }
        betas = model.beta_parameters(end)
        for gates in self.extra_gates.values():
            betas += gates.score_parameters()
        if betas:
            optimisers["beta"] = torch.optim.SGD(betas, lr=opts["beta_lr"], momentum=0.9)
        if adaptive:
            rates = opts["threshold_lr"]
            groups = [
                {"params": model.threshold_parameters(g, end), "lr": rates[g]}
                for g in model.granularities
            ]
            groups += [
                {"params": gates.threshold_parameters(), "lr": rates.get(g, 0.1)}
                for g, gates in self.extra_gates.items()
            ]
            optimisers["thresholds"] = torch.optim.SGD(groups, momentum=0.9)
        return optimisers

    def _batches_per_epoch(self) -> int:
        # One-level search: every batch of the search split trains everything.
        data = self.ctx.data
        batches = len(data.weights) + len(data.arch)
        cap = self.ctx.budget.max_steps_per_epoch
        return min(batches, cap) if cap else batches

    def _round(
        self, end: int, own_cells: range, head, optimisers, lam: float, weights_only: bool
    ) -> tuple[float, float]:
        model, device = self.model, self.ctx.device
        model.train()
        if head is not None:
            head.train()
        ce_sum = r_op_sum = 0.0
        seen = correct = batches = 0
        data = self.ctx.data
        for images, labels in round_batches(data.weights, data.arch, self.rounds.batches_per_round):
            images, labels = images.to(device), labels.to(device)
            logits, ce, r_op = self.step(
                images, labels, end, own_cells, head, optimisers, lam, weights_only
            )
            ce_sum += ce.item()
            r_op_sum += float(r_op.detach())
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.numel()
            batches += 1
        self.epoch += 1
        self.ctx.epoch_ended(
            self.epoch,
            {
                "train_loss": ce_sum / max(batches, 1),
                "train_accuracy": correct / max(seen, 1),
                "alive_ops": float(model.num_alive_ops(end)),
                "size_proxy": model.size_proxy(end),
                "lambda": lam,
                # Rounds are reported as epochs; this says how much data they read.
                "data_epochs": self.epoch * self.rounds.batches_per_round / self.batches_per_epoch,
            },
        )
        return ce_sum / max(batches, 1), r_op_sum / max(batches, 1)

    def step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        end: int,
        own_cells: range,
        head: nn.Module | None,
        optimisers: dict[str, torch.optim.Optimizer],
        lam: float,
        weights_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One one-level step on cells 0..end: logits, cross-entropy and op sparsity."""
        model = self.model
        features = model(images, upto=end)
        logits = head(features) if head is not None else model.classify(features)
        ce = F.cross_entropy(logits, labels)
        loss = ce
        r_op = model.op_sparsity(own_cells) if not weights_only else ce.new_zeros(())
        if lam > 0:
            loss = ce + lam * (r_op + self._threshold_regulariser(end))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"MG-DARTS search loss became {loss.item()}")
        for optimiser in optimisers.values():
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(
            optimisers["weights"].param_groups[0]["params"], float(self.opts["grad_clip"])
        )
        for name in ["weights"] if weights_only else list(optimisers):
            optimisers[name].step()
        return logits, ce, r_op

    # ----------------------------------------------------------------- regrowth

    def _regrow(self, end: int, head, pruned_ops: float) -> int:
        """One round with masks frozen (fresh α momentum), then regrow pruned ops (E)."""
        n = max(1, int(float(self.opts["regrow_ratio"]) * pruned_ops))
        optimisers = self._optimisers(end, head, adaptive=False)
        self._round(end, range(end + 1), head, optimisers, lam=0.0, weights_only=False)
        alphas = self.model.alpha_parameters(end)
        momentum = [
            optimisers["alpha"].state.get(a, {}).get("momentum_buffer", torch.zeros_like(a))
            for a in alphas
        ]
        masks = [self.model.cells[i].op_mask.bool() for i in range(end + 1)]
        distribution = regrowth_distribution(
            [m.detach().cpu() for m in momentum],
            [torch.sigmoid(a.detach()).cpu() for a in alphas],
            [m.cpu() for m in masks],
        )
        chosen = choose_regrowth(distribution, [~m.cpu() for m in masks], n, self.regrowth_rng)
        for cell, edge, op in chosen:
            self.model.regrow(cell, edge, op)
        self.ctx.log.info("regrew %d op(s): %s", len(chosen), chosen)
        return len(chosen)

    # ------------------------------------------------------------------- export

    def export(self) -> Architecture:
        """The official cell-wise genotype of the alive ops, with their channel counts and masks.

        Filters pruned since the last shrink (or all of them, with ``shrink = false``)
        are folded into the weight masks as zero rows (and zero depthwise channels).
        """
        cells, masks = [], []
        for index, cell in enumerate(self.model.cells):
            ops, op_masks = [], []
            for edge, op_index in cell.alive_ops():
                name = PRIMITIVES[op_index]
                node = int(cell.node_of_edge[edge])
                module = cell.op(edge, op_index)
                ops.append(
                    {
                        "op": name,
                        "input": cell.edge_inputs[node][edge - cell.node_slices[node].start],
                        "output": node + 2,
                        "channels": cell.op_channels(edge, op_index),
                    }
                )
                op_masks.append(_exported_masks(module))
            cells.append(ops)
            masks.append(op_masks)
            self.ctx.log.info("cell %d: %d op(s)", index, len(ops))
        payload = {
            "format": FORMAT_TAG,
            "primitives": list(PRIMITIVES),
            "concat": [2, 3, 4, 5],
            # The evaluation network is the searched one, stem included (ALGORITHM.md B.1).
            "init_channels": self.model.spec.channels,
            "cells": cells,
        }
        return Architecture("mg-darts-genotype", payload, masks)


@dataclass(frozen=True)
class _PhasePlan:
    stage: int  # 1, 2, ...; 0 for the global phase
    end: int  # the phase trains cells 0..end
    own_cells: range  # the cells whose ops this phase searches first
    target_ratio: float  # the phase ends once the size proxy is below this share of its start
    freeze_factor: float = 1.0


@dataclass
class _PhaseState:
    """A phase under way: what its next round needs, and what a checkpoint saves."""

    plan: _PhasePlan
    head: nn.Module | None
    optimisers: dict[str, torch.optim.Optimizer]
    lam: AdaptiveLambda
    start_size: float
    start_ops: int
    target: float
    warmup: int
    rounds_done: int = 0
    reached_target: bool = False

    def finished(self, rounds: int) -> bool:
        return self.reached_target or self.rounds_done >= rounds


@dataclass
class _Progress:
    """How far the search got: the unit a checkpoint resumes from."""

    start_size: float
    phases_done: int = 0
    current: _PhaseState | None = None
    regrown: int = 0


# The official code's schedule (ALGORITHM.md C, D, E, F): `-o` these for long searches.
REFERENCE_SCHEDULE: dict[str, Any] = {
    "warmup_epochs": 5,
    "stage_target": 0.3,
    "regrow_ratio": 0.2,
    "lam0": 1e-5,
    "lam_start": 0.0,
    "threshold_lr": {"operation": 0.1, "filter": 0.1, "weight": 0.001},
    "threshold_init": {"operation": 0.0, "filter": 0.0, "weight": 0.0},
}

# Option ``discretizers``: granularity -> registered discretizer name.
DEFAULT_DISCRETIZERS: dict[str, str] = {g: f"mg-threshold-{g}" for g in GRANULARITIES}


# Scores are sigmoids or magnitudes, never below 0, so this threshold lets every unit through.
THRESHOLD_OFF = -1.0


def _exported_masks(module: nn.Module) -> list[torch.Tensor]:
    if isinstance(module, SepConv):
        mid, out = module.gate_mid.filter_mask, module.gate_out.filter_mask
        return [
            module.dw1.weight_mask.clone().cpu(),
            (module.pw1.weight_mask * mid[:, None, None, None]).cpu(),
            (module.dw2.weight_mask * mid[:, None, None, None]).cpu(),
            (module.pw2.weight_mask * out[:, None, None, None]).cpu(),
        ]
    if isinstance(module, DilConv):
        out = module.gate_out.filter_mask
        return [
            module.dw.weight_mask.clone().cpu(),
            (module.pw.weight_mask * out[:, None, None, None]).cpu(),
        ]
    return []
