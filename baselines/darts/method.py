"""DARTS (Liu et al., ICLR 2019): bi-level search, first- or second-order architecture gradient.

The supernet, the discretizer and the operation granularity are looked up in the
registry by name, so a plugin can swap any of them through the method's options.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.darts.genotype import Genotype
from mgas_bench.components import (
    Architecture,
    Method,
    SearchContext,
    SearchResult,
    Supernet,
    UnitGroup,
)


class Architect:
    """Updates architecture parameters on the architecture split.

    First order treats the weights as constants. Second order differentiates
    through one virtual SGD step of the weights (DARTS eq. 7), with the
    Hessian-vector product approximated by central finite differences (eq. 8).
    """

    def __init__(self, model: Supernet, options: dict[str, Any], second_order: bool):
        self.model = model
        self.second_order = second_order
        self.alphas = model.arch_parameters()
        self.optimizer = torch.optim.Adam(
            self.alphas,
            lr=options["arch_lr"],
            betas=(0.5, 0.999),
            weight_decay=options["arch_weight_decay"],
        )
        self.names = {id(p): n for n, p in model.named_parameters()}

    def step(
        self,
        train: tuple[torch.Tensor, torch.Tensor],
        valid: tuple[torch.Tensor, torch.Tensor],
        eta: float,
        w_optimizer: torch.optim.SGD,
    ) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.second_order:
            logits = self._unrolled_backward(train, valid, eta, w_optimizer)
        else:
            logits = self.model(valid[0])
            loss = F.cross_entropy(logits, valid[1])
            # An alpha the loss does not use keeps grad None, so Adam leaves it alone.
            grads = torch.autograd.grad(loss, self.alphas, allow_unused=True)
            for alpha, grad in zip(self.alphas, grads, strict=True):
                alpha.grad = grad
        self.optimizer.step()
        return logits.detach()

    def _unrolled_backward(self, train, valid, eta, w_optimizer) -> torch.Tensor:
        weights = self.model.weight_parameters()
        group = w_optimizer.param_groups[0]
        momentum, decay = group["momentum"], group["weight_decay"]
        loss = F.cross_entropy(self.model(train[0]), train[1])
        grads = _grad(loss, weights)
        with torch.no_grad():
            unrolled = []
            for w, g in zip(weights, grads, strict=True):
                buf = w_optimizer.state.get(w, {}).get("momentum_buffer")
                step = g + decay * w + (momentum * buf if buf is not None else 0)
                unrolled.append((w - eta * step).requires_grad_())
        replaced = {self.names[id(w)]: u for w, u in zip(weights, unrolled, strict=True)}
        logits = functional_call(self.model, replaced, (valid[0],))
        val_loss = F.cross_entropy(logits, valid[1])
        grads = _grad(val_loss, self.alphas + unrolled)
        d_alpha, d_w = grads[: len(self.alphas)], grads[len(self.alphas) :]
        implicit = self._hessian_vector_product(weights, d_w, train)
        for alpha, da, h in zip(self.alphas, d_alpha, implicit, strict=True):
            alpha.grad = da - eta * h
        return logits

    def _hessian_vector_product(self, weights, vector, train) -> list[torch.Tensor]:
        norm = torch.cat([v.reshape(-1) for v in vector]).norm()
        r = 0.01 / max(norm.item(), 1e-12)

        def alpha_grads(scale: float) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                for w, v in zip(weights, vector, strict=True):
                    w.add_(v, alpha=scale)
            loss = F.cross_entropy(self.model(train[0]), train[1])
            return _grad(loss, self.alphas)

        plus = alpha_grads(r)
        minus = alpha_grads(-2 * r)
        with torch.no_grad():
            for w, v in zip(weights, vector, strict=True):
                w.add_(v, alpha=r)
        return [(p - m) / (2 * r) for p, m in zip(plus, minus, strict=True)]


def _grad(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of ``loss``, with zeros for inputs it does not use.

    Unused inputs are normal here: a pruned op's weights, or the reduce-cell
    alphas of a supernet too shallow to have a reduction cell.
    """
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


class Darts(Method):
    def __init__(self, name: str, second_order: bool):
        self.name = name
        self.second_order = second_order
        order = "second-order (unrolled)" if second_order else "first-order"
        self.description = f"DARTS, {order} architecture gradient"

    def default_options(self) -> dict[str, Any]:
        return {
            "search_space": "darts",
            "discretizer": "darts-top2",
            # The supernet's batch norms, as DARTS's model_search.py has them (read by the
            # `darts` space; NNI's space has search_affine = true, pool_bn = false).
            "search_affine": False,
            "pool_bn": True,
            "w_lr": 0.025,
            "w_lr_min": 0.001,
            "w_momentum": 0.9,
            "w_weight_decay": 3e-4,
            "grad_clip": 5.0,
            "arch_lr": 3e-4,
            "arch_weight_decay": 1e-3,
        }

    def search(self, ctx: SearchContext) -> SearchResult:
        opts = dict(ctx.options)
        space = ctx.components.get("search_space", opts["search_space"])
        discretizer = ctx.components.get("discretizer", opts["discretizer"])
        if discretizer.granularity != "operation":
            raise ValueError(
                f"discretizer {discretizer.name!r} decides {discretizer.granularity!r} units; "
                f"DARTS derives its genotype from 'operation' units"
            )
        granularity = ctx.components.get("granularity", discretizer.granularity)
        torch.manual_seed(ctx.seed)
        model = ctx.place(space.build(ctx.supernet_spec(), opts))
        w_optimizer = torch.optim.SGD(
            model.weight_parameters(),
            lr=opts["w_lr"],
            momentum=opts["w_momentum"],
            weight_decay=opts["w_weight_decay"],
        )
        epochs = ctx.budget.epochs
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            w_optimizer, max(epochs, 1), eta_min=opts["w_lr_min"]
        )
        architect = Architect(model, opts, self.second_order)
        stats: dict[str, float] = {}
        first_epoch = 0
        saved = ctx.checkpoints.restore()
        if saved is not None:
            model.load_state_dict(saved["model"])
            w_optimizer.load_state_dict(saved["w_optimizer"])
            schedule.load_state_dict(saved["schedule"])
            architect.optimizer.load_state_dict(saved["arch_optimizer"])
            first_epoch, stats = saved["epoch"], saved["stats"]
        for epoch in range(first_epoch, epochs):
            stats = self._epoch(ctx, model, architect, w_optimizer, schedule.get_last_lr()[0], opts)
            schedule.step()
            ctx.epoch_ended(epoch + 1, stats)
            ctx.checkpoints.save(
                {
                    "epoch": epoch + 1,
                    "stats": stats,
                    "model": model.state_dict(),
                    "w_optimizer": w_optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "arch_optimizer": architect.optimizer.state_dict(),
                },
                epoch=epoch + 1,
            )
        groups = granularity.unit_groups(model)
        genotype = genotype_from_groups(groups, lambda g: discretizer.discretize(g, opts))
        ctx.log.info("alphas normal:\n%s", F.softmax(model.alphas_normal, -1))
        ctx.log.info("alphas reduce:\n%s", F.softmax(model.alphas_reduce, -1))
        return SearchResult(Architecture("darts-genotype", genotype.to_json()), stats)

    def _epoch(self, ctx, model, architect, w_optimizer, lr, opts) -> dict[str, float]:
        model.train()
        seen = correct = valid_correct = valid_seen = 0
        loss_sum = 0.0
        arch_batches = iter(ctx.data.arch)
        for step, (images, labels) in enumerate(ctx.data.weights):
            if ctx.budget.max_steps_per_epoch and step >= ctx.budget.max_steps_per_epoch:
                break
            try:
                valid = next(arch_batches)
            except StopIteration:
                arch_batches = iter(ctx.data.arch)
                valid = next(arch_batches)
            images, labels = images.to(ctx.device), labels.to(ctx.device)
            valid = (valid[0].to(ctx.device), valid[1].to(ctx.device))
            logits, loss, valid_logits = search_step(
                model, architect, w_optimizer, lr, opts["grad_clip"], (images, labels), valid
            )
            valid_correct += (valid_logits.argmax(1) == valid[1]).sum().item()
            valid_seen += valid[1].numel()
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.numel()
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "valid_accuracy": valid_correct / max(valid_seen, 1),
        }


def search_step(
    model: Supernet,
    architect: Architect,
    w_optimizer: torch.optim.SGD,
    lr: float,
    grad_clip: float,
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One DARTS step: the architecture on ``valid``, then the weights on ``train``.

    Returns the training logits and loss and the validation logits.
    """
    valid_logits = architect.step(train, valid, lr, w_optimizer)
    w_optimizer.zero_grad(set_to_none=True)
    logits = model(train[0])
    loss = F.cross_entropy(logits, train[1])
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"search loss became {loss.item()}")
    loss.backward()
    nn.utils.clip_grad_norm_(model.weight_parameters(), grad_clip)
    w_optimizer.step()
    return logits, loss, valid_logits


def genotype_from_groups(groups: list[UnitGroup], discretize) -> Genotype:
    """A DARTS genotype from one operation group per (cell type, node)."""
    cells: dict[str, list[tuple[str, int]]] = {"normal": [], "reduce": []}
    nodes: dict[str, list[int]] = {"normal": [], "reduce": []}
    for group in groups:
        keep = discretize(group)
        cell_type, inputs = group.meta["cell_type"], group.meta["inputs"]
        for edge, op in keep.nonzero().tolist():
            cells[cell_type].append((group.labels[op], inputs[edge]))
        nodes[cell_type].append(group.meta["node"])
    return Genotype(
        normal=tuple(cells["normal"]),
        normal_concat=tuple(nodes["normal"]),
        reduce=tuple(cells["reduce"]),
        reduce_concat=tuple(nodes["reduce"]),
    )
