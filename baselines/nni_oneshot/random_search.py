"""Picks RandomOneShot's architecture: random search with weight sharing.

NNI's ``RandomOneShot`` trains the supernet on uniformly sampled paths, and its own
export is one more random draw: choosing from the trained supernet is left to the
user. The suite does what Li & Talwalkar (2019) do with such a supernet: draw
``samples`` architectures, score each with the shared weights on the architecture
split, and keep the best.
"""

from __future__ import annotations

from typing import Any

import torch

from mgas_bench.components import SearchContext


@torch.no_grad()
def best_sampled_architecture(
    strategy: Any, ctx: SearchContext, samples: int
) -> tuple[dict[str, Any], dict[str, float]]:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    oneshot = strategy.oneshot_module
    supernet = oneshot.training_module.model.to(ctx.device)
    # Batch statistics, as during supernet training: running averages mix every path.
    supernet.train()
    limit = ctx.budget.max_steps_per_epoch
    best: tuple[float, dict[str, Any]] | None = None
    for _ in range(samples):
        sample = oneshot.resample()
        correct = seen = 0
        for step, (images, labels) in enumerate(ctx.data.arch):
            if limit and step >= limit:
                break
            logits = supernet(images.to(ctx.device))
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            seen += labels.numel()
        accuracy = correct / max(seen, 1)
        ctx.log.info("sampled architecture: shared-weight accuracy %.4f: %s", accuracy, sample)
        if best is None or accuracy > best[0]:
            best = (accuracy, dict(sample))
    assert best is not None
    return best[1], {"sampled_architectures": float(samples), "best_shared_accuracy": best[0]}
