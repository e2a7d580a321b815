"""Validation during training: the validation split's metrics, and which epoch is best."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ffx.data import open_shards, resolve_colour_on
from ffx.errors import BuildError, FfxError
from ffx.model.checkpoint import Placement
from ffx.model.mcx_api import MCXAPI
from ffx.pipeline.engine.builddir import SHARD_INDEX
from ffx.train.config import TrainConfig
from ffx.train.evaluate import build_real_labels, model_real_classes, score_split, unnamed_videos_note
from ffx.train.logs import print_warning
from ffx.train.metrics import (
    detection_metrics,
    mark_rows,
    method_metrics,
    nan_to_none,
    shard_class_names,
    split_label_names,
)

_said: set[str] = set()  # warnings already printed by this process


def validation_classes(config: TrainConfig) -> list[int] | None:
    """The labelled classes of the validation split by index.json, or None when there is no split
    to validate on (no index, or no such split): `validate` then returns nothing."""
    if not (Path(config.shards) / SHARD_INDEX).is_file():
        return None
    try:
        shard_set = open_shards(config.shards, config.val_split)
    except BuildError:
        return None
    return sorted(label for label, count in shard_set.labels.items() if label >= 0 and count > 0)


def validation_real(shards: str, split: str, classes: int) -> tuple[tuple[int, ...], set[int]]:
    """The model's real classes (by the training split's label names, as its checkpoint records
    them) and the validation split's real labels (by its own), as `ffx eval` reads them: class 0
    only when the samples carry no names. Refused in one line when named but none is real."""
    names = shard_class_names(shards, classes)
    model_real = model_real_classes(names)
    if not model_real:
        raise FfxError(
            f"{shards}: none of the training classes ({', '.join(names)}) is named real or pristine, "
            "so validation cannot tell real from fake; index the build with its real class named "
            "real or pristine (the [labels] names of the recipe)"
        )
    labels = sorted(label for label, count in open_shards(shards, split).labels.items() if count > 0)
    named = split_label_names(shards, split, [label for label in labels if label >= 0])
    return model_real, build_real_labels(named, labels, f"the {split} split in {shards}")


def one_class_warning(config: TrainConfig, classes: list[int]) -> str:
    """What a validation split with fewer than two classes means for the run, in one line."""
    held = f"one class (label {classes[0]} only)" if classes else "no labelled samples"
    then = (
        "best.safetensors is chosen by the lowest validation loss instead"
        if classes
        else "no best.safetensors is written"
    )
    return (
        f"the {config.val_split} split in {config.shards} holds {held}: validation AUC and BOSC "
        f"are undefined (NaN), so {then}; give the {config.val_split} split real and fake videos "
        "for AUC"
    )


def best_score(metrics: dict, by_loss: bool) -> float:
    """How good an epoch's validation was, higher is better: video AUC, or minus the validation
    loss when AUC is undefined (a one-class split); NaN when there is nothing to go by."""
    value = metrics.get("val_loss" if by_loss else "val_video_auc", math.nan)
    if not isinstance(value, float | int):
        return math.nan
    return -float(value) if by_loss else float(value)


@torch.no_grad()
def evaluate(
    model: MCXAPI,
    shards: str,
    split: str,
    crop: int | None,
    device: torch.device,
    workers: int = 2,
    colour_on: str = "auto",
) -> dict:
    """Frame- and video-level BOSC and AUC of `model` on a split (centre crops, no pairs; real and
    fake read from the class names as `ffx eval` reads them, `validation_real`; unlabelled samples
    left out), the mean cross-entropy of its labelled frames (`loss`), and `methods`: for each
    manipulation method, the metrics of the split's reals against that method's fakes, as
    `ffx eval` reports them
    (`ffx.train.metrics.method_metrics`). The samples are scored as `ffx eval` scores them, the
    colour spaces made where `colour_on` says (`auto`: on a GPU, on the device)."""
    colour_on = resolve_colour_on(colour_on, device)
    model_real, split_real = validation_real(shards, split, model.config.num_classes)
    rows = score_split(model, shards, split, crop, device, workers, real=model_real, colour_on=colour_on)
    mark_rows(rows, split_real)
    labelled = [row for row in rows if row["fake"] is not None]
    note = unnamed_videos_note(labelled, f"the {split} split in {shards}")
    if note and note not in _said:  # once a run, not every epoch
        _said.add(note)
        print_warning(note)
    losses = [row["nll"] for row in labelled if not math.isnan(row["nll"])]
    pooled = detection_metrics(
        [int(row["fake"]) for row in labelled],
        [row["score"] for row in labelled],
        [row["video"] for row in labelled],
    )
    # Cross-entropy of the plain classifier (no pairs): what ranks checkpoints when AUC cannot.
    loss = sum(losses) / len(losses) if losses else math.nan
    methods = method_metrics(labelled, f"the {split} split in {shards}")
    return pooled | {"loss": loss, "methods": nan_to_none(methods)}


def validate(model: MCXAPI, config: TrainConfig, placement: Placement) -> dict:
    """Metrics on the validation split, or {} when the shards have none (or no index to tell)."""
    if not (Path(config.shards) / SHARD_INDEX).is_file():
        return {}
    try:
        open_shards(config.shards, config.val_split)
    except BuildError:
        return {}
    return evaluate(
        model,
        config.shards,
        config.val_split,
        config.crop,
        placement.device,
        config.workers,
        config.colour_on,
    )
