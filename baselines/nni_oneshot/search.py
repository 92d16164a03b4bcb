"""One NNI one-shot search on the suite's data, budget and seed.

Imports NNI: the method loads this module only when the plugin is available.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from nni.nas import strategy as nni_strategy
from nni.nas.evaluator.pytorch import Lightning, Trainer

from baselines.darts.genotype import Genotype
from baselines.nni_oneshot.console import console_to_run_log
from baselines.nni_oneshot.experiment import RunLocalExperiment
from baselines.nni_oneshot.random_search import best_sampled_architecture
from baselines.nni_oneshot.resume import SuiteCheckpoints
from baselines.nni_oneshot.sample import genotype_from_nni_sample
from baselines.nni_oneshot.space import SizedDartsSpace
from baselines.nni_oneshot.training import DartsWeightTraining, EpochReports, TrainThenValidate
from mgas_bench.components import Architecture, SearchContext, SearchResult

EXPORT_FILE = "export.json"  # NNI's own export, kept beside its experiment folder


class _TripleBatchENAS(nni_strategy.ENAS):
    """NNI's ENAS fed the batches it unpacks (see :class:`TrainThenValidate`)."""

    def __init__(self, max_steps: int | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_steps = max_steps

    def train_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        return TrainThenValidate(train_dataloader_fn(), val_dataloader_fn(), self.max_steps)


def _darts(opts: Mapping[str, Any], ctx: SearchContext) -> nni_strategy.DARTS:
    return nni_strategy.DARTS(
        arc_learning_rate=opts["arch_lr"], gradient_clip_val=opts["grad_clip"]
    )


def _gumbel_darts(opts: Mapping[str, Any], ctx: SearchContext) -> nni_strategy.GumbelDARTS:
    return nni_strategy.GumbelDARTS(
        arc_learning_rate=opts["arch_lr"],
        gradient_clip_val=opts["grad_clip"],
        temperature=(opts["temperature"], opts["temperature_min"]),
    )


def _enas(opts: Mapping[str, Any], ctx: SearchContext) -> nni_strategy.ENAS:
    return _TripleBatchENAS(
        ctx.budget.max_steps_per_epoch,
        reward_metric_name="val_acc",
        batches_per_update=opts["batches_per_update"],
    )


def _random(opts: Mapping[str, Any], ctx: SearchContext) -> nni_strategy.RandomOneShot:
    return nni_strategy.RandomOneShot()


STRATEGY_BUILDERS: dict[str, Callable[[Mapping[str, Any], SearchContext], Any]] = {
    "darts": _darts,
    "gumbel-darts": _gumbel_darts,
    "enas": _enas,
    "random": _random,
}


def _trainer(
    ctx: SearchContext, opts: Mapping[str, Any], kind: str, callbacks: list[pl.Callback]
) -> Trainer:
    cuda = ctx.device.type == "cuda"
    limit = ctx.budget.max_steps_per_epoch
    kwargs: dict[str, Any] = {}
    if kind == "random":
        # The only strategy here that leaves optimisation to Lightning, so the only
        # one that clips through the trainer (the differentiable ones clip themselves).
        kwargs["gradient_clip_val"] = opts["grad_clip"]
    if limit and kind != "enas":  # ENAS's loader applies the limit to both of its halves
        kwargs.update(limit_train_batches=limit, limit_val_batches=limit)
    return Trainer(
        max_epochs=ctx.budget.epochs,
        accelerator="gpu" if cuda else "cpu",
        devices=[ctx.device.index or 0] if cuda else 1,
        default_root_dir=str(ctx.run_dir / "nni"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kwargs,
    )


def run_nni_search(kind: str, ctx: SearchContext) -> SearchResult:
    opts = ctx.options
    folder = ctx.run_dir / "nni"
    # NNI's experiment folder is rebuilt by every attempt; a resumed search goes on from
    # the suite's checkpoint (see baselines.nni_oneshot.resume).
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with console_to_run_log(ctx.log):
        torch.manual_seed(ctx.seed)
        space = SizedDartsSpace(ctx.supernet_spec())
        module = DartsWeightTraining(
            num_classes=ctx.data.info.num_classes,
            lr=opts["w_lr"],
            lr_min=opts["w_lr_min"],
            momentum=opts["w_momentum"],
            weight_decay=opts["w_weight_decay"],
            epochs=ctx.budget.epochs,
        )
        reports = EpochReports(ctx.epoch_ended)
        checkpoints = SuiteCheckpoints(ctx.checkpoints, reports, folder)
        trainer = _trainer(ctx, opts, kind, [reports, checkpoints])
        saved = ctx.checkpoints.restore()
        if saved is not None:
            checkpoints.resume_from(saved, trainer)
        evaluator = Lightning(
            module, trainer, train_dataloaders=ctx.data.weights, val_dataloaders=ctx.data.arch
        )
        strategy = STRATEGY_BUILDERS[kind](opts, ctx)
        experiment = RunLocalExperiment(space, evaluator, strategy, working_directory=folder)
        try:
            experiment.run()
            if kind == "random":
                sample, metrics = best_sampled_architecture(strategy, ctx, opts["samples"])
            else:
                sample, metrics = experiment.export_top_models(formatter="dict")[0], {}
        finally:
            experiment.stop()
    (folder / EXPORT_FILE).write_text(json.dumps(sample, indent=2) + "\n", encoding="utf-8")
    genotype: Genotype = genotype_from_nni_sample(sample)
    ctx.log.info("NNI exported %s", sample)
    return SearchResult(
        Architecture("darts-genotype", genotype.to_json()), {**reports.last, **metrics}
    )
