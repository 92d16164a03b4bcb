"""The Lightning side of an NNI search: the weight optimiser, epoch reports, ENAS's data.

Imports NNI and Lightning: load this module only when the plugin is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import nni
import pytorch_lightning as pl
import torch
from nni.nas.evaluator.pytorch import ClassificationModule


@nni.trace
class DartsWeightTraining(ClassificationModule):
    """NNI's classification module with the suite's DARTS weight protocol.

    NNI's default is Adam at a constant rate; every other method in the suite trains
    supernet weights with SGD (momentum, weight decay) on a cosine schedule, so NNI's
    rows get the same, and differ from the suite's DARTS only in what NNI does.
    """

    def __init__(
        self,
        num_classes: int,
        lr: float,
        lr_min: float,
        momentum: float,
        weight_decay: float,
        epochs: int,
    ):
        super().__init__(num_classes=num_classes, learning_rate=lr, weight_decay=weight_decay)
        self.lr_min, self.momentum, self.epochs = lr_min, momentum, epochs

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.learning_rate,
            momentum=self.momentum,
            weight_decay=self.hparams.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, max(self.epochs, 1), eta_min=self.lr_min
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}


# NNI's metric names -> the names the suite's own methods report.
METRIC_NAMES: dict[str, str] = {
    "train_loss": "train_loss",
    "train_acc": "train_accuracy",
    "val_loss": "valid_loss",
    "val_acc": "valid_accuracy",
}


class EpochReports(pl.Callback):
    """Hands each search epoch's last logged metrics to the suite's ``epoch_ended``."""

    def __init__(self, epoch_ended: Callable[[int, dict[str, float]], None]):
        self.epoch_ended = epoch_ended
        self.last: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {}
        for name, value in trainer.callback_metrics.items():
            if name in METRIC_NAMES:
                number = float(value)
                if not math.isfinite(number):
                    raise FloatingPointError(f"NNI search metric {name} became {number}")
                metrics[METRIC_NAMES[name]] = number
        self.last = metrics
        self.epoch_ended(trainer.current_epoch + 1, metrics)


class TrainThenValidate:
    """One ENAS epoch: every weight-split batch, then every architecture-split batch.

    Items are ``(batch, index, loader_index)``, the triple NNI's ENAS module unpacks.
    NNI builds it with Lightning's ``CombinedLoader`` in a private mode; since
    Lightning 2.1 the fit loop drops the loader index from such batches, and NNI then
    mistakes the labels for the loader index. Handing Lightning a plain iterable of
    triples gives NNI exactly the batches it was written for.
    """

    def __init__(self, weights: Iterable, arch: Iterable, max_steps: int | None):
        self.loaders = (weights, arch)
        self.max_steps = max_steps

    def _limit(self, loader: Iterable) -> Iterable:
        return islice(loader, self.max_steps) if self.max_steps else loader

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        for loader_index, loader in enumerate(self.loaders):
            for index, batch in enumerate(self._limit(loader)):
                yield batch, index, loader_index

    def __len__(self) -> int:
        sizes = [len(loader) for loader in self.loaders]  # type: ignore[arg-type]
        return sum(min(size, self.max_steps) if self.max_steps else size for size in sizes)
