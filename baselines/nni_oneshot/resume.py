"""Checkpoint and resume for NNI searches: Lightning's own checkpoint, kept by the suite.

Lightning knows how to save and reload everything an NNI one-shot module holds (the
supernet with its architecture parameters, every optimiser and schedule, the loop's
epoch counters); the suite's ``ctx.checkpoints`` adds the random generators. A
Lightning checkpoint is written at the end of each search epoch and stored, as bytes,
in the suite's checkpoint. Imports Lightning: load only when the plugin is available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from baselines.nni_oneshot.training import EpochReports
from mgas_bench.components import Checkpoints

LIGHTNING_CHECKPOINT = "resume.ckpt"  # in the run's nni/ folder, while the search runs
PARAMETER_NAMES = "mgas_bench_optimizer_parameter_names"  # our key in Lightning's checkpoint


class SuiteCheckpoints(pl.Callback):
    """Saves Lightning's checkpoint through the suite's checkpoints after every epoch.

    Place it after :class:`EpochReports` in the trainer's callbacks, so that an epoch
    is reported before it is checkpointed (as the suite's own methods do).
    """

    def __init__(self, checkpoints: Checkpoints, reports: EpochReports, folder: Path):
        self.checkpoints, self.reports = checkpoints, reports
        self.path = folder / LIGHTNING_CHECKPOINT
        self.resuming = False
        self._saved_optimizers: list[tuple[dict[str, Any], list[str]]] = []

    def resume_from(self, saved: dict[str, Any], trainer: pl.Trainer) -> None:
        """Make ``trainer.fit`` go on from ``saved`` (what an earlier run's callback saved)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(saved["lightning"])
        self.reports.last = dict(saved["reports"])
        trainer.ckpt_path = str(self.path)
        self.resuming = True

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[PARAMETER_NAMES] = [
            _parameter_names(optimizer, pl_module) for optimizer in trainer.optimizers
        ]

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_optimizers = list(
            zip(checkpoint["optimizer_states"], checkpoint[PARAMETER_NAMES], strict=True)
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resuming:
            # NNI drew random numbers building its supernet since the first restore; put
            # the generators back as they were at the save, before Lightning's fit loop
            # sets up the epoch's loaders.
            self.checkpoints.restore()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.resuming:
            return
        # Lightning has restored the optimisers by parameter position. NNI orders its
        # architecture parameters differently in every process (they pass through
        # hash-ordered containers), which gave each alpha another alpha's Adam moments;
        # restore them again, by parameter name.
        for optimizer, (saved, names) in zip(
            trainer.optimizers, self._saved_optimizers, strict=True
        ):
            optimizer.load_state_dict(
                _by_position(saved, names, _parameter_names(optimizer, pl_module))
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path)
        state = {"lightning": self.path.read_bytes(), "reports": dict(self.reports.last)}
        self.path.unlink()
        self.checkpoints.save(state, epoch=trainer.current_epoch + 1)


def _parameter_names(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> list[str]:
    names = {id(p): name for name, p in module.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _by_position(saved: dict[str, Any], saved_names: list[str], names: list[str]) -> dict[str, Any]:
    """``saved`` (an optimiser's state dict) re-indexed for parameters in the order ``names``."""
    if sorted(saved_names) != sorted(names):
        raise ValueError("the checkpoint's optimiser holds other parameters than this one's")
    old_index = {name: index for index, name in enumerate(saved_names)}
    state = {
        new: saved["state"][old_index[name]]
        for new, name in enumerate(names)
        if old_index[name] in saved["state"]
    }
    groups, start = [], 0
    for group in saved["param_groups"]:
        size = len(group["params"])
        groups.append({**group, "params": list(range(start, start + size))})
        start += size
    return {"state": state, "param_groups": groups}
