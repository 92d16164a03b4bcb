"""Final evaluation: train the network an architecture describes, from scratch, and test it.

The same loop scores every method's architecture, which is what makes their rows
comparable. It follows the DARTS evaluation protocol (SGD with cosine learning
rate, auxiliary loss, drop-path rising linearly, cutout) with sizes from the
run's budget. The reported accuracy is that of the final epoch: picking the best
epoch on the test set would select on test data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mgas_bench.components import (
    Architecture,
    ArchitectureFormat,
    Checkpoints,
    DataBundle,
    DatasetInfo,
    NetworkSpec,
    NoCheckpoints,
)
from mgas_bench.config import EvalConfig, RuntimeConfig
from mgas_bench.data import cutout, loader
from mgas_bench.devices import autocast, loader_options, memory_format
from mgas_bench.profiling import count_macs, count_masked_out_parameters, count_parameters


class NonFiniteLossError(FloatingPointError):
    pass


def network_spec(info: DatasetInfo, channels: int, layers: int, auxiliary: bool) -> NetworkSpec:
    return NetworkSpec(
        in_channels=info.input_shape[0],
        num_classes=info.num_classes,
        input_size=info.input_shape[1],
        channels=channels,
        layers=layers,
        auxiliary=auxiliary,
        network_style=info.network_style,
    )


def measure_network(model: nn.Module, info: DatasetInfo) -> dict[str, float]:
    """Size figures of an evaluation network, auxiliary head excluded (DARTS's convention).

    ``params_nonzero_m`` leaves out weights removed by masks (``weight_mask``
    buffers); for an unmasked network it equals ``params_m``.
    """
    params = count_parameters(model)
    return {
        "params_m": params / 1e6,
        "params_nonzero_m": (params - count_masked_out_parameters(model)) / 1e6,
        "macs_m": count_macs(model, info.input_shape) / 1e6,
    }


def accuracy(model: nn.Module, data: torch.utils.data.DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in data:
            logits, _ = model(images.to(device))
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            total += labels.numel()
    return correct / max(total, 1)


def evaluate_architecture(
    arch: Architecture,
    fmt: ArchitectureFormat,
    bundle: DataBundle,
    cfg: EvalConfig,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
    checkpoints: Checkpoints | None = None,
    runtime: RuntimeConfig | None = None,
) -> dict[str, float]:
    """Train and test; with ``checkpoints``, save after every epoch and go on from the last save."""
    checkpoints = checkpoints or NoCheckpoints()
    start = time.perf_counter()
    torch.manual_seed(seed)
    spec = network_spec(bundle.info, cfg.channels, cfg.layers, cfg.auxiliary)
    model = fmt.build_network(arch, spec)
    runtime = runtime or RuntimeConfig()
    metrics = measure_network(model, bundle.info)
    options = loader_options(runtime, device)
    model.to(device, memory_format=memory_format(runtime))
    train = loader(bundle.train, cfg.batch_size, True, seed, options)
    test = loader(bundle.test, cfg.batch_size, False, seed, options)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(cfg.epochs, 1))
    cut_rng = torch.Generator().manual_seed(seed)
    first_epoch, seconds_before = 0, 0.0
    saved = checkpoints.restore()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        train.generator.set_state(saved["loader_rng"])
        cut_rng.set_state(saved["cutout_rng"])
        first_epoch, seconds_before = saved["epoch"], saved["seconds"]
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        model.drop_path_prob = cfg.drop_path * epoch / cfg.epochs
        seen = correct = 0
        loss_sum = 0.0
        for step, (images, labels) in enumerate(train):
            if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
                break
            images = cutout(images, cfg.cutout, cut_rng).to(device)
            labels = labels.to(device)
            with autocast(runtime, device):
                logits, aux_logits = model(images)
                loss = F.cross_entropy(logits, labels)
                if aux_logits is not None:
                    loss = loss + cfg.auxiliary_weight * F.cross_entropy(aux_logits, labels)
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(
                    f"evaluation loss became {loss.item()} at epoch {epoch + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.numel()
        schedule.step()
        on_epoch(
            epoch + 1,
            {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)},
        )
        checkpoints.save(
            {
                "epoch": epoch + 1,
                "seconds": seconds_before + time.perf_counter() - start,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "loader_rng": train.generator.get_state(),
                "cutout_rng": cut_rng.get_state(),
            },
            epoch=epoch + 1,
        )
    model.drop_path_prob = 0.0
    with autocast(runtime, device):
        metrics["test_accuracy"] = accuracy(model, test, device)
    metrics["eval_seconds"] = seconds_before + time.perf_counter() - start
    return metrics
