"""MG-DARTS search: multi-stage, one-level, adaptive pruning at three granularities.

Follows ALGORITHM.md D (stages, warm-up, commit rounds, size-target stop), C.3
(adaptive λ), E (regrowth) with these deliberate differences from the official code:
every loop has an epoch cap; optimisers are rebuilt after every structural change
(I.5); regrowth draws from a seeded generator (I.20); the search trains on both halves
of the search split and never sees the test set (I.16).

Not yet implemented (see the issue): the global phase after the last stage (D.3),
physical channel shrinking (D.5) and routing the gates through registered
discretizers. Filters are exported as zeroed rows of the weight masks instead of
narrower convolutions. Until those land the method is not registered.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.components import Architecture, Method, SearchContext, SearchResult
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
            "granularities": list(GRANULARITIES),
            "regrowth": True,
            "adaptive_pruning": True,
            # Used only with adaptive_pruning = false: share of alive units kept per round.
            "retention": {"operation": 0.7, "filter": 0.8, "weight": 0.9},
            "warmup_epochs": 1,
            "stage_target": 0.7,  # a stage ends once its size proxy is below this share
            "regrow_ratio": 0.5,
            "lam0": 1e-2,
            "c0": 2.0,
            "n_thre": 12,
            "w_lr": 0.01,
            "w_momentum": 0.9,
            "w_weight_decay": 3e-4,
            "grad_clip": 5.0,
            "alpha_lr": 1.0,
            "beta_lr": 1.0,
            "threshold_lr": {"operation": 0.1, "filter": 0.1, "weight": 0.05},
            # Thresholds restart here every stage; the official code uses 0 (ALGORITHM.md C.1).
            "threshold_init": {"operation": 0.0, "filter": 0.0, "weight": 0.0},
        }

    def search(self, ctx: SearchContext) -> SearchResult:
        return _Search(ctx).run()


class _Search:
    def __init__(self, ctx: SearchContext):
        self.ctx, self.opts = ctx, dict(ctx.options)
        torch.manual_seed(ctx.seed)
        self.model = MGSupernet.from_options(ctx.supernet_spec(), self.opts).to(ctx.device)
        self.regrowth_rng = torch.Generator().manual_seed(ctx.seed)
        self.epoch = 0
        stages = int(self.opts["stages"])
        if not 1 <= stages <= self.model.num_cells:
            raise ValueError(f"stages must be between 1 and {self.model.num_cells}, got {stages}")
        self.stage_ends = self.model.stage_ends(stages)
        self.epochs_per_stage = max(2, ctx.budget.epochs // stages)

    # ------------------------------------------------------------------ stages

    def run(self) -> SearchResult:
        start_size = self.model.size_proxy()
        regrown = 0
        first_cell = 0
        for stage, end in enumerate(self.stage_ends, start=1):
            final = end == self.model.num_cells - 1
            head = None if final else self._head(end)
            stats = self._stage(stage, end, range(first_cell, end + 1), head)
            regrown_now = 0
            if self.opts["regrowth"] and stage >= 2:
                regrown_now = self._regrow(end, head, stats["pruned_ops"])
            regrown += regrown_now
            self.ctx.stage_ended(stage, {**stats, "regrown_ops": float(regrown_now)})
            first_cell = end + 1
        metrics = {
            "size_proxy_ratio": self.model.size_proxy() / start_size,
            "alive_ops": float(self.model.num_alive_ops()),
            "regrown_ops": float(regrown),
        }
        return SearchResult(self.export(), metrics)

    def _head(self, end: int) -> nn.Module:
        model = self.model
        return StageHead(
            model.cell_out_channels(end), model.spec.num_classes, model.cell_out_size(end)
        ).to(self.ctx.device)

    def _stage(self, stage: int, end: int, own_cells: range, head) -> dict[str, float]:
        model, opts, adaptive = self.model, self.opts, self.opts["adaptive_pruning"]
        # Thresholds restart each stage, earlier cells included: that is what re-prunes them.
        start = dict(opts["threshold_init"]) if adaptive else _thresholds_off()
        model.reset_thresholds(upto=end, **start)
        optimisers = self._optimisers(end, head, adaptive)
        lam = AdaptiveLambda(float(opts["lam0"]), float(opts["c0"]), int(opts["n_thre"]))
        start_size, start_ops = model.size_proxy(end), model.num_alive_ops(end)
        target = float(opts["stage_target"]) * start_size
        warmup = min(int(opts["warmup_epochs"]), self.epochs_per_stage - 1)
        for _ in range(warmup):
            self._epoch(end, own_cells, head, optimisers, lam=0.0, weights_only=True)
        for _ in range(self.epochs_per_stage - warmup):
            ce, r_op = self._epoch(end, own_cells, head, optimisers, lam.lam, weights_only=False)
            if adaptive:
                pruned = model.commit(upto=end)["operation"]
                lam.update(pruned, ce, r_op)
            else:
                pruned = self._fixed_ratio_round(end)
            if model.size_proxy(end) < target:
                break
        return {
            "size_proxy": model.size_proxy(end),
            "size_proxy_start": start_size,
            "alive_ops": float(model.num_alive_ops(end)),
            "pruned_ops": float(start_ops - model.num_alive_ops(end)),
            "lambda": lam.lam,
        }

    def _fixed_ratio_round(self, end: int) -> int:
        """Adaptive pruning off: keep a fixed share of each group's alive units, by score."""
        pruner = self.ctx.components.get("pruner", "fixed-ratio")
        before = self.model.num_alive_ops(end)
        for granularity in self.model.granularities:
            groups = [
                g
                for g in self.model.unit_groups(granularity)
                if g.meta["cell"] <= end and g.mask.sum() > 0
            ]
            retention = float(self.opts["retention"][granularity])
            for group in groups:
                alive = int(group.mask.sum())
                keep = max(1, math.ceil(retention * alive)) / group.mask.numel()
                pruner.prune([group], lambda g: g.mask.bool(), {"retention": keep})
        return before - self.model.num_alive_ops(end)

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
        if betas:
            optimisers["beta"] = torch.optim.SGD(betas, lr=opts["beta_lr"], momentum=0.9)
        if adaptive:
            groups = [
                {"params": model.threshold_parameters(g, end), "lr": opts["threshold_lr"][g]}
                for g in model.granularities
            ]
            optimisers["thresholds"] = torch.optim.SGD(groups, momentum=0.9)
        return optimisers

    def _batches(self):
        # One-level search: every batch of the search split trains everything.
        data = self.ctx.data
        steps = self.ctx.budget.max_steps_per_epoch
        batches = itertools.chain(data.weights, data.arch)
        return itertools.islice(batches, steps) if steps else batches

    def _epoch(
        self, end: int, own_cells: range, head, optimisers, lam: float, weights_only: bool
    ) -> tuple[float, float]:
        model, device = self.model, self.ctx.device
        model.train()
        if head is not None:
            head.train()
        ce_sum = r_op_sum = 0.0
        seen = correct = batches = 0
        for images, labels in self._batches():
            images, labels = images.to(device), labels.to(device)
            features = model(images, upto=end)
            logits = head(features) if head is not None else model.classify(features)
            ce = F.cross_entropy(logits, labels)
            loss = ce
            r_op = model.op_sparsity(own_cells) if not weights_only else ce.new_zeros(())
            if lam > 0:
                loss = ce + lam * (r_op + model.threshold_regulariser(upto=end))
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"MG-DARTS search loss became {loss.item()}")
            for optimiser in optimisers.values():
                optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(
                optimisers["weights"].param_groups[0]["params"], float(self.opts["grad_clip"])
            )
            steps = ["weights"] if weights_only else list(optimisers)
            for name in steps:
                optimisers[name].step()
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
            },
        )
        return ce_sum / max(batches, 1), r_op_sum / max(batches, 1)

    # ----------------------------------------------------------------- regrowth

    def _regrow(self, end: int, head, pruned_ops: float) -> int:
        """One epoch with masks frozen (fresh α momentum), then regrow pruned ops (E)."""
        n = max(1, int(float(self.opts["regrow_ratio"]) * pruned_ops))
        optimisers = self._optimisers(end, head, adaptive=False)
        self._epoch(end, range(end + 1), head, optimisers, lam=0.0, weights_only=False)
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
        """The official cell-wise genotype of the alive ops, and their weight masks.

        Without physical shrinking every op keeps its cell's width; pruned filters are
        folded into the weight masks as zero rows (and zero depthwise channels).
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
                        "channels": _channels(name, cell.C),
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
            "cells": cells,
        }
        return Architecture("mg-darts-genotype", payload, masks)


def _thresholds_off() -> dict[str, float]:
    # σ(·) > 0 and |w| >= 0, so a threshold of -1 lets every unit through.
    return {"operation": -1.0, "filter": -1.0, "weight": -1.0}


def _channels(name: str, width: int) -> list[int]:
    if name.startswith("sep_conv"):
        return [width, width, width]
    if name.startswith("dil_conv"):
        return [width, width]
    return [width]


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
