"""`ffx train`: MCX-API trained from ffx shards, on CPU, one GPU, or many with torchrun.

`train` reads top to bottom: `setup_run` builds the run (settings, model, optimiser, a resumed
run's state), then `train_one_epoch` until the last step, each epoch its steps (`train_step`,
`backward`) and its end (`end_epoch`: validation, checkpoints). The pieces live beside it:
`ffx.train.stream` the batches (seeded per epoch and rank, so a resumed run replays exactly),
`ffx.train.validate` the validation split's metrics, `ffx.train.state` the run folder's state,
`ffx.train.logs` progress, metrics.jsonl and TensorBoard, `ffx.model.checkpoint` checkpoints and
model placement. With `colour_on` `device` (the default on a GPU) the loader decodes RGB alone
and the step makes the other colour spaces from the uint8 batch on the device
(`ffx.model.colour`: the very bytes the host path gives), before normalisation.

A run folder holds config.json, metrics.jsonl, and checkpoints as safetensors (`last`, `best` by
pooled validation video AUC, or by validation loss when the validation split holds one class
and AUC is undefined) with the optimiser, schedule and random state beside `last`.

Before reading a shard, training checks it against shards/index.json (size and sha256; see
`ffx.data.check_shard_files`), remembering matches in the run folder's shard-checks.json.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console

from ffx.data import resolve_colour_on
from ffx.errors import FfxError
from ffx.model.checkpoint import Placement, data_recipe, load_weights, model_images, place
from ffx.model.mcx_api import MCXAPI, LinearHead, ModelConfig, pairwise_loss
from ffx.pipeline.engine.workers import available_cores
from ffx.train.batches import Short
from ffx.train.config import TrainConfig, frozen_random_backbone
from ffx.train.logs import (
    LOG_EVERY,
    METRICS_FILE,
    TrainLogs,
    print_warning,
    tensorboard_writer_class,
    train_logs,
    trim_metrics,
)
from ffx.train.state import (
    BEST,
    LAST,
    carried_state,
    init_model_config,
    load_run_state,
    restore_random_state,
    resumed_config,
    save_config,
    save_random_state,
    save_run_checkpoint,
    save_state,
)
from ffx.train.stream import Carried, check_run_shards, check_shards, collect_carries, epoch_batches
from ffx.train.validate import best_score, one_class_warning, validate, validation_classes, validation_real


@dataclass
class TrainReport:
    """Where a run stands: steps done of the total, the last epoch's metrics."""

    run: Path
    step: int
    total_steps: int
    epochs_done: int
    metrics: dict = field(default_factory=dict)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if precision not in choices:
        raise FfxError(f"--precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    return choices[precision]


class TrainStep(torch.nn.Module):
    """The model plus its loss in one forward, so DDP sees every parameter use."""

    def __init__(self, model: MCXAPI, config: TrainConfig):
        super().__init__()
        self.model, self.config = model, config
        self.frozen = False

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The loss of a batch and its parts (`cross_entropy`, `rank`) as floats."""
        if self.frozen:
            with torch.no_grad():
                features = self.model.features(images)
        else:
            features = self.model.features(images)
        if isinstance(self.model.head, LinearHead):  # the plain baseline: cross-entropy alone
            loss = F.cross_entropy(self.model.head.score(features.float()), labels)
            return loss, {"cross_entropy": float(loss.detach()), "rank": 0.0}
        return pairwise_loss(
            self.model.head,
            features.float(),
            labels,
            margin=self.config.margin,
            rank_weight=self.config.rank_weight,
            metric=self.config.distance,
        )


def cosine_lr(step: int, total: int, base: float) -> float:
    """Cosine annealing from `base` to 0 over `total` steps."""
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@dataclass
class Run:
    """The objects of one run, made by `setup_run`, and where it stands: `step` done, the `best`
    validation score so far, `history` (epoch -> metrics) and `carried` (epoch, the leftovers
    it starts with: a single process's stream replays them)."""

    config: TrainConfig
    folder: Path
    placement: Placement
    model: MCXAPI
    trainer: TrainStep
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    dtype: torch.dtype | None
    recipe: dict  # the build's data recipe, in every checkpoint
    by_loss: bool  # the validation split holds one class: best by loss, AUC being undefined
    wrapped: torch.nn.Module | None = None  # `trainer` under DDP and torch.compile, as asked
    step: int = 0
    best: float = -math.inf
    history: dict = field(default_factory=dict)
    carried: tuple[int, Carried] = (0, ())

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in an epoch (resolved by `setup_run`)."""
        return self.config.steps_per_epoch

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run, all its epochs."""
        return self.config.epochs * self.config.steps_per_epoch

    @property
    def stop_at(self) -> int:
        """The step the run stops at: the last, or `max_steps` before it."""
        return min(self.total_steps, self.config.max_steps or self.total_steps)


@dataclass
class EpochTally:
    """An epoch's running counts: its batches' `losses`, the samples `seen`, the `short`
    batches, the last step's `lr`, and when it `started` (for samples/s)."""

    losses: list[float] = field(default_factory=list)
    seen: int = 0
    short: int = 0
    lr: float = math.nan
    started: float = field(default_factory=time.monotonic)

    def rate(self, world: int) -> float:
        """Samples per second since the epoch began, over all `world` processes."""
        return self.seen * world / max(time.monotonic() - self.started, 1e-9)


def train(
    config: TrainConfig,
    resume: bool = False,
    show_progress: bool = True,
    verify: bool = True,
    warn: Callable[[str], None] = print_warning,
    given: Collection[str] | None = None,
    log_every: int = LOG_EVERY,
    tensorboard: bool = False,
) -> TrainReport:
    """Train (or resume) the run `config.run`; rank 0 writes the run folder. With `verify`, the
    train and validation shards are first checked against index.json (`check_run_shards`), after
    the model is built: a wrong backbone, pretrained file or --init-from checkpoint is told before
    any hashing. Rank 0 tells `warn` (one line) when the validation split cannot give AUC, and
    when a resumed run's schedule is stretched. `given`: the settings the caller set (see
    `resumed_config`; `given_settings` gives them).

    With `show_progress`, rank 0 shows a rich bar when stderr is a terminal, else (a log file:
    Slurm's) prints a plain line on stderr every `log_every` steps (`ProgressLines`; 0: none).
    With `tensorboard`, rank 0 writes TensorBoard event files to RUN/tensorboard (the optional
    `tensorboard` package; without it, one line before anything runs)."""
    if not config.shards or not config.run:
        raise FfxError("a run needs --shards and --run")
    if log_every < 0:
        raise FfxError(f"--log-every {log_every}: give 0 (no progress lines) or more")
    writer_class = tensorboard_writer_class() if tensorboard else None  # missing: told now
    placement = place(config.device)
    terminal = Console(stderr=True).is_terminal
    bar = show_progress and placement.main and terminal
    run = setup_run(config, placement, resume=resume, verify=verify, bar=bar, warn=warn, given=given)
    report = TrainReport(run.folder, run.step, run.total_steps, run.step // run.steps_per_epoch)
    lines = show_progress and placement.main and not terminal
    with train_logs(
        run.folder,
        run.step,
        run.stop_at,
        run.steps_per_epoch,
        run.config.epochs,
        bar=bar,
        log_every=log_every if lines else 0,
        writer_class=writer_class if placement.main else None,
        resume=resume,
    ) as logs:
        while run.step < run.stop_at:
            report = train_one_epoch(run, logs)
    return report


def setup_run(
    config: TrainConfig,
    placement: Placement,
    *,
    resume: bool,
    verify: bool,
    bar: bool,
    warn: Callable[[str], None],
    given: Collection[str] | None,
) -> Run:
    """The run `train` asked for, ready for its first step: its settings resolved (a resumed
    run's own, workers, colour, steps per epoch), the model built and the shards checked, the
    optimiser made and, resuming, the saved state read back; rank 0 writes config.json."""
    folder = Path(config.run)
    planned_epochs = config.epochs
    if resume:
        config, planned_epochs = resumed_config(folder, config, given)
    elif (folder / LAST).is_file():
        raise FfxError(f"{folder} already holds a run: use --resume, or another --run")
    if config.workers is None:
        config = replace(config, workers=max(1, available_cores() // placement.world))
    config = replace(config, colour_on=resolve_colour_on(config.colour_on, placement.device))
    classes, rarest = check_shards(config)
    val_classes = validation_classes(config)
    if val_classes is not None:
        validation_real(config.shards, config.val_split, classes)  # refused now, not after an epoch
    by_loss = val_classes is not None and len(val_classes) < 2  # AUC undefined: best by loss
    if by_loss and placement.main:
        warn(one_class_warning(config, val_classes))
    if placement.main and not resume and (note := frozen_random_backbone(config)):
        warn(note)
    model = build_model(config, classes, placement, folder / LAST if resume else None)
    # The normalisation resolved (pretrained backbone's, --init-from checkpoint's, or 0.5) is
    # written to config.json and every checkpoint.
    config = replace(config, mean=model.config.mean, std=model.config.std)
    if verify:
        check_run_shards(config, folder, placement, bar)
    recipe = data_recipe(config.shards)  # the build's recipe, in every checkpoint
    if config.steps_per_epoch is None:  # saved resolved in config.json, so a resume keeps it
        batch = config.classes_per_batch * config.images_per_class * config.accumulate
        config = replace(config, steps_per_epoch=max(1, rarest * classes // (batch * placement.world)))
    model.to(placement.device)
    if placement.device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [{"params": model.backbone.parameters()}, {"params": model.head.parameters()}],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    dtype = autocast_dtype(config.precision, placement.device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    trainer = TrainStep(model, config)
    run = Run(config, folder, placement, model, trainer, optimizer, scaler, dtype, recipe, by_loss)
    if resume:
        resume_run(run, planned_epochs, warn)
    elif placement.main:
        folder.mkdir(parents=True, exist_ok=True)
        save_config(folder, config)
    if placement.world > 1:
        dist.barrier()  # the run folder exists before any rank writes into it
    run.wrapped = wrap(trainer, config, placement)
    return run


def build_model(config: TrainConfig, classes: int, placement: Placement, resumed: Path | None) -> MCXAPI:
    """The run's model with its starting weights: the checkpoint `resumed` (a resumed run's last),
    an --init-from checkpoint, a --pretrained backbone, or random ones (the same on every rank)."""
    resume = resumed is not None
    model_config = ModelConfig(
        config.backbone,
        config.spaces,
        classes,
        config.hidden,
        config.dropout,
        config.head,
        config.mean,
        config.std,
    )
    if config.init_from and not resume:
        model_config = init_model_config(config, model_config)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    # A resumed run's weights come from its checkpoint: --pretrained is not read again.
    model = MCXAPI(model_config, Path(config.pretrained) if config.pretrained and not resume else None)
    torch.manual_seed(config.seed * 1000 + placement.rank)  # dropout differs between ranks
    if resume:
        load_weights(model, resumed)
    elif config.init_from:
        load_weights(model, Path(config.init_from))
    return model


def resume_run(run: Run, planned_epochs: int, warn: Callable[[str], None]) -> None:
    """Where a resumed run stands, from its folder: optimiser, scaler, step, best score, history,
    the leftovers its epoch starts with, and this rank's random state. Rank 0 drops metric lines
    past the saved step and, when --epochs grew, saves the longer run's config.json and tells
    `warn` how the schedule stretches."""
    state, random_state = load_run_state(run.folder, run.placement)
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    run.step, run.best, run.history = state["step"], state["best"], state["history"]
    epoch = run.step // run.steps_per_epoch
    run.carried = (epoch, carried_state(state, epoch))
    restore_random_state(random_state, run.placement.device)
    if not run.placement.main:
        return
    trim_metrics(run.folder / METRICS_FILE, run.step)
    config = run.config
    if config.epochs != planned_epochs:  # the next --resume goes on with the longer run
        save_config(run.folder, config)
        old_lr = cosine_lr(run.step, planned_epochs * run.steps_per_epoch, config.lr)
        warn(
            f"resuming at step {run.step} with --epochs {config.epochs} (the run had "
            f"{planned_epochs}): a longer cosine schedule, {run.total_steps} steps in all; "
            f"the learning rate goes from {old_lr:.3g} to "
            f"{cosine_lr(run.step, run.total_steps, config.lr):.3g}"
        )


def wrap(trainer: TrainStep, config: TrainConfig, placement: Placement) -> torch.nn.Module:
    """`trainer` as the step calls it: under DDP with several processes, compiled with --compile."""
    wrapped = trainer
    if placement.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            trainer, find_unused_parameters=config.freeze_epochs > 0
        )
    if config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def train_one_epoch(run: Run, logs: TrainLogs) -> TrainReport:
    """The steps of the epoch `run.step` is in (all of them, those a resumed run has left, or up
    to `stop_at`), then its end (`end_epoch`)."""
    epoch = run.step // run.steps_per_epoch
    run.trainer.frozen = epoch < run.config.freeze_epochs
    run.model.train()
    tally = EpochTally()
    done_in_epoch = (run.step % run.steps_per_epoch) * run.config.accumulate  # a resumed run skips these
    leftovers = run.carried[1] if run.carried[0] == epoch else ()
    run.carried, carry_out = (epoch, leftovers), {}
    stream = iter(epoch_batches(run.config, epoch, run.placement, done_in_epoch, leftovers))
    batches = collect_carries(stream, carry_out)
    while run.step < run.stop_at and run.step // run.steps_per_epoch == epoch:
        train_step(run, batches, tally, logs)
    epoch_done = run.step % run.steps_per_epoch == 0
    if epoch_done and run.placement.world == 1:
        for _ in batches:  # the workers' Carry items: what the next epoch starts with
            pass
        roles = max(len(carry_out), 1)
        run.carried = (epoch + 1, tuple(carry_out.get(role, ()) for role in range(roles)))
    del batches, stream  # its loader workers end before validation starts others
    return end_epoch(run, epoch, epoch_done, tally, logs)


def train_step(run: Run, batches: Iterator, tally: EpochTally, logs: TrainLogs) -> None:
    """One optimiser step over `accumulate` batches (a `Short` one, which the pass could not
    give, adds nothing), at the step's cosine learning rate (none for a frozen backbone)."""
    optimizer = run.optimizer
    lr = cosine_lr(run.step, run.total_steps, run.config.lr)
    optimizer.param_groups[0]["lr"] = 0.0 if run.trainer.frozen else lr
    optimizer.param_groups[1]["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    stepped, step_losses = tally.seen, len(tally.losses)
    for _ in range(run.config.accumulate):
        batch = next(batches)
        if isinstance(batch, Short):  # the pass ran out: no data, no update
            tally.short += 1
            continue
        backward(run, batch, tally)
    if tally.seen > stepped:  # else every batch of the step was Short: nothing to step with
        if run.scaler:
            run.scaler.step(optimizer)
            run.scaler.update()
        else:
            optimizer.step()
    run.step += 1
    tally.lr = lr
    rate = tally.rate(run.placement.world)
    logs.step(run.step, lr, rate, tally.seen - stepped, tally.losses[step_losses:], tally.losses[-20:])


def backward(run: Run, batch: dict, tally: EpochTally) -> None:
    """The loss of one batch (under autocast, divided among the accumulated batches) and its
    gradients; its loss and samples go to `tally`."""
    config, device = run.config, run.placement.device
    images = model_images(
        batch["image"], device, config.spaces, config.colour_on, run.model.config.mean, run.model.config.std
    )
    if device.type == "cuda" and config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = batch["label"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=run.dtype or torch.float32, enabled=run.dtype is not None):
        loss, parts = run.wrapped(images, labels)
    loss = loss / config.accumulate
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    tally.losses.append(parts["cross_entropy"] + config.rank_weight * parts["rank"])
    tally.seen += len(labels)


def end_epoch(run: Run, epoch: int, epoch_done: bool, tally: EpochTally, logs: TrainLogs) -> TrainReport:
    """The end of an epoch, or of the part of it a stopped run trained: its metrics (and, when
    the epoch is done, validation: `validate_epoch`), then rank 0 saves the state and `last`,
    and every rank its random state."""
    placement = run.placement
    metrics = {
        "epoch": epoch,
        "step": run.step,
        "loss": sum(tally.losses) / max(len(tally.losses), 1),
        "lr": tally.lr,
        "samples_per_second": tally.rate(placement.world),
        "frozen_backbone": run.trainer.frozen,
        "short_batches": tally.short,  # batches the epoch's pass could not give (one process)
    }
    if placement.main:
        if epoch_done:
            validate_epoch(run, epoch, metrics, logs)
        save_state(
            run.folder,
            run.optimizer,
            run.scaler,
            run.step,
            run.best,
            run.history,
            placement.world,
            run.carried,
        )
        save_run_checkpoint(run.folder, LAST, run.model, run.config, run.step, run.recipe)
    save_random_state(run.folder, placement.rank, run.step, placement.device)
    report = TrainReport(run.folder, run.step, run.total_steps, run.step // run.steps_per_epoch, metrics)
    if placement.world > 1:
        dist.barrier()
    return report


def validate_epoch(run: Run, epoch: int, metrics: dict, logs: TrainLogs) -> None:
    """Rank 0, at the end of an epoch: the validation metrics added to `metrics` (as `val_*`), the
    epoch in the history, `best` saved when it scores better, and the metrics logged."""
    metrics |= {f"val_{key}": value for key, value in validate(run.model, run.config, run.placement).items()}
    run.history[str(epoch)] = metrics
    score = best_score(metrics, run.by_loss)
    if not math.isnan(score) and score > run.best:
        run.best = score
        save_run_checkpoint(run.folder, BEST, run.model, run.config, run.step, run.recipe)
    logs.epoch(metrics)
