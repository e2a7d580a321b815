"""`ffx train` and `ffx eval`: MCX-API from ffx shards, on CPU, one GPU, or many with torchrun.

Batches stream from the shards, P classes x K images each, decoded as uint8 (randomly cropped
and mirrored) and normalised on the device. With `colour_on` `device` (the default on a GPU) the
loader decodes RGB alone and the step makes the other colour spaces from the uint8 batch on the
device (`ffx.model.colour`: the very bytes the host path gives), before normalisation. In one
process an epoch reads every shard once, in an order seeded per epoch, and the class queues'
leftovers are carried into the next epoch; under torchrun shards are resampled, so every rank
runs the same fixed number of steps whatever its share of shards. Each epoch's stream is seeded
by (seed, epoch, rank), which makes a resumed run replay exactly: it rebuilds the epoch's stream
(with the leftovers it started with, kept in the run state) and skips the batches already
trained on.

A run folder holds config.json, metrics.jsonl (a line per epoch: training loss, learning rate,
and the validation metrics pooled and per manipulation method), and checkpoints as safetensors
(`last`, `best` by pooled validation video AUC, or by validation loss when the validation split
holds one class and AUC is undefined) with the optimiser, schedule and random state beside
`last` in a plain tensor file read back with `weights_only=True`. A checkpoint describes itself
in its metadata (`describe_checkpoint`): model, input (spaces, crop, normalisation), classes, and
the data recipe of the build it was trained on; applying it reads nothing else. With
`tensorboard`, event files go to RUN/tensorboard.

Before reading a shard, both check it against shards/index.json (size and sha256; see
`ffx.data.check_shard_files`), remembering matches in the run folder's shard-checks.json.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import webdataset as wds
from rich.console import Console
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ffx import __version__
from ffx.data import (
    SHARD_CHECKS,
    Decoder,
    check_shard_files,
    check_spaces,
    collate,
    loader_spaces,
    open_shards,
    pass_order,
    raise_sent_errors,
    resolve_colour_on,
    send_errors,
    shard_dataset,
    worker_role,
)
from ffx.errors import BuildError, FfxError, ManifestError
from ffx.model.colour import rgb_to_spaces
from ffx.model.mcx_api import (
    MCXAPI,
    NEUTRAL,
    LinearHead,
    ModelConfig,
    fit_problems,
    pairwise_loss,
    per_channel,
)
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import SHARD_INDEX
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.workers import available_cores
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.train.batches import BalancedBatches, Carry, PassBatches, Short, interleave, split_quota
from ffx.train.config import LEGACY, RESUMABLE, TrainConfig, setting_name
from ffx.train.metrics import (
    are_placeholders,
    detection_metrics,
    is_real_name,
    mark_rows,
    method_metrics,
    nan_to_none,
    placeholder_names,
    shard_class_names,
)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST, BEST, STATE = "last.safetensors", "best.safetensors", "last.state.pt"
EXPECTED_CHECKPOINT = (
    "expected a checkpoint written by `ffx train` (RUN/last.safetensors or RUN/best.safetensors)"
)
TENSORBOARD_DIR = "tensorboard"
LOG_EVERY = 50  # steps between plain progress lines when stderr is not a terminal


@dataclass
class TrainReport:
    """Where a run stands: steps done of the total, the last epoch's metrics."""

    run: Path
    step: int
    total_steps: int
    epochs_done: int
    metrics: dict = field(default_factory=dict)


# ---------------------------------------------------------------- devices and processes


@dataclass(frozen=True)
class Placement:
    """This process's place in a (possibly single-process) job."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def place(device: str) -> Placement:
    """Join the torchrun job when there is one (nccl on GPUs, gloo on CPUs) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FfxError("--device cuda asked for, but PyTorch sees no GPU")
        device = f"cuda:{local_rank}" if device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Placement(rank, world, torch.device(device))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if precision not in choices:
        raise FfxError(f"--precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    return choices[precision]


# ---------------------------------------------------------------- data


def check_shards(config: TrainConfig) -> tuple[int, int]:
    """(number of classes, samples of the rarest class) of the training split, with clear errors."""
    shard_set = open_shards(config.shards, "train")
    if shard_set.samples == 0:
        raise BuildError(f"the train split in {config.shards} is empty")
    check_spaces(shard_set, config.spaces, config.colour_on, config.shards)
    if not shard_set.labels:  # a URL pattern: the counts index.json would give must be told
        if config.classes is None or config.steps_per_epoch is None:
            raise BuildError(
                f"{config.shards} comes without index.json: give --classes and --steps-per-epoch, "
                "or a shards folder"
            )
        if config.classes < 2:
            raise FfxError(f"--classes {config.classes}: a detector needs at least 2 (real and fake)")
        if config.classes_per_batch > config.classes:
            raise FfxError(f"--classes-per-batch {config.classes_per_batch} but --classes {config.classes}")
        return config.classes, 0
    if min(shard_set.labels) < 0:
        raise BuildError("the train split holds unlabelled samples (label -1): index with labels")
    classes = max(shard_set.labels) + 1
    if classes < 2:
        raise BuildError(
            f"the train split in {config.shards} holds one class (label 0 only): "
            "a detector needs at least 2 (real and fake)"
        )
    absent = [label for label in range(classes) if label not in shard_set.labels]
    if absent:
        raise BuildError(
            f"class {absent[0]} is missing from the train split (classes must be 0..{classes - 1})"
        )
    if config.classes_per_batch > classes:
        raise FfxError(f"--classes-per-batch {config.classes_per_batch} but the data has {classes} classes")
    return classes, min(shard_set.labels.values())


def check_run_shards(config: TrainConfig, run: Path, placement: Placement, show_progress: bool) -> None:
    """Check the train and validation shards against index.json, remembering matches in
    `run`/shard-checks.json. One process per node checks (a node may read its own copy of the
    shards); the others wait for it."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        splits = ["train", config.val_split]
        check_shard_files(config.shards, splits, run / SHARD_CHECKS, show_progress and placement.main)
    if placement.world > 1:
        # The first check of a large build can outlast NCCL's 10-minute collective timeout:
        # the others wait on a CPU group with a longer one.
        waiting = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
        dist.barrier(group=waiting)
        dist.destroy_process_group(waiting)


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


def _print_warning(text: str) -> None:
    print(f"ffx: warning: {text}", file=sys.stderr, flush=True)


Carried = tuple[tuple[tuple[int, str], ...], ...]  # per loader worker role: (shard index, key)


def epoch_batches(
    config: TrainConfig, epoch: int, placement: Placement, skip: int = 0, carried: Carried = ()
):
    """This rank's batches for one epoch, seeded by (seed, epoch, rank).

    In one process (world size 1) the epoch is one pass: every shard once, in a seeded order of
    its own, its `steps_per_epoch * accumulate` batches shared among the loader workers by their
    shards' samples; the leftovers `carried` from the previous epoch (per worker role, from its
    `Carry`) are queued first. A worker whose shards run out gives `Short` in place of its missing
    batches, and each ends with a `Carry` of its leftovers. Under torchrun: an endless resampled
    stream (no `Short`, no `Carry`). Samples are chosen for batches before they are decoded, so
    neither the samples a batch does not need nor the `skip` batches a resumed run has already
    trained on cost any decoding."""
    seed = config.seed * 1_000_003 + epoch * 1009 + placement.rank
    one_pass = placement.world == 1
    workers = config.workers or 0
    if one_pass:
        shard_set = open_shards(config.shards, "train")
        workers = min(workers, len(shard_set.urls))  # a worker without a shard would only idle
        roles = max(workers, 1)
        order = pass_order(len(shard_set.urls), seed)
        sizes = shard_set.shard_samples or (1,) * len(shard_set.urls)
        quotas = split_quota(
            config.steps_per_epoch * config.accumulate,
            [sum(sizes[index] for index in order[role::roles]) for role in range(roles)],
        )
        own, shift = interleave(quotas, skip)
        batcher = PassBatches(
            config.classes_per_batch,
            config.images_per_class,
            seed,
            tuple(shard_set.urls),
            quotas,
            carried,
            shift,
        )
    else:
        own, shift = interleave((None,) * max(workers, 1), skip)
        batcher = BalancedBatches(config.classes_per_batch, config.images_per_class, seed=seed)
    samples = shard_dataset(
        config.shards,
        "train",
        config.spaces,
        config.crop,
        train=True,
        seed=seed,
        resampled=not one_pass,
        decode=False,
        worker_shift=shift,
        colour_on=config.colour_on,
    )
    decoder = Decoder(
        loader_spaces(config.spaces, config.colour_on), config.crop, True, seed, flip=config.flip
    )
    batches = samples.compose(
        batcher, SkipFirst(own, shift), wds.map(partial(_decode_batch, decoder)), send_errors
    )
    loader = wds.WebLoader(
        batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=placement.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),  # leaves the global RNG (dropout) alone
    )
    return loader.compose(raise_sent_errors)  # an unreadable record: its one-line error, as itself


def _decode_batch(decoder: Decoder, batch):
    """A batch of raw samples decoded and collated; `Short` and `Carry` pass as they are."""
    if not isinstance(batch, list):
        return batch
    return collate([decoder.decode(sample) for sample in batch])


@dataclass(frozen=True)
class SkipFirst:
    """Drop the batches of the loader's output a resumed run has trained on: `own[role]` for each
    worker role (see `ffx.train.batches.interleave`). The stream's worker roles are rotated by
    `shift` (see `ffx.data.worker_role`), so the loader, which starts with worker 0, starts with
    the worker whose role gives the next batch."""

    own: tuple[int, ...]
    shift: int = 0

    def __call__(self, batches):
        role, _ = worker_role(self.shift)
        for number, batch in enumerate(batches):
            if number >= self.own[role]:
                yield batch


def model_images(
    images: torch.Tensor,
    device: torch.device,
    spaces: Sequence[str],
    colour_on: str,
    mean: float | Sequence[float] | None = 0.5,
    std: float | Sequence[float] | None = 0.5,
) -> torch.Tensor:
    """A loader's uint8 batch -> the model's float input on `device`: with `colour_on` `device`
    the batch is RGB, moved to `device` and converted to `spaces` there (`rgb_to_spaces`), then
    normalised (`normalise`); with `host` it holds `spaces` already."""
    if colour_on == "device":
        images = rgb_to_spaces(images.to(device, non_blocking=True), spaces)
    return normalise(images, device, mean, std)


def normalise(
    images: torch.Tensor,
    device: torch.device,
    mean: float | Sequence[float] | None = 0.5,
    std: float | Sequence[float] | None = 0.5,
) -> torch.Tensor:
    """uint8 (B, C, H, W) on the host -> float on the device, (x / 255 - mean) / std; `mean` and
    `std` one number or one per channel (a model's `config.mean`, `config.std`), None for 0.5."""
    images = images.to(device, non_blocking=True).float()
    mean, std = 0.5 if mean is None else mean, 0.5 if std is None else std
    if isinstance(mean, int | float) and isinstance(std, int | float):
        return images.mul_(1 / (255 * std)).sub_(mean / std)
    channels = images.shape[1]
    shape = (1, channels, 1, 1)
    mean_t = torch.tensor(per_channel(mean, channels, "mean"), device=device).view(shape)
    std_t = torch.tensor(per_channel(std, channels, "std"), device=device).view(shape)
    return images.mul_(1 / (255 * std_t)).sub_(mean_t / std_t)


# ---------------------------------------------------------------- the step


class TrainStep(torch.nn.Module):
    """The model plus its loss in one forward, so DDP sees every parameter use."""

    def __init__(self, model: MCXAPI, config: TrainConfig):
        super().__init__()
        self.model, self.config = model, config
        self.frozen = False

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
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


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the saved step (a run stopped while saving)."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            atomic.write_bytes(path, "".join(line + "\n" for line in kept).encode())


def _plain_json(values: dict) -> dict:
    """NaN (a metric without both classes) as null: strict JSON readers refuse NaN."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in values.items()
    }


def cosine_lr(step: int, total: int, base: float) -> float:
    """Cosine annealing from `base` to 0 over `total` steps."""
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


# ---------------------------------------------------------------- checkpoints


# The recipe fields that shape a build's crops, recorded in every checkpoint (`data_recipe`).
RECIPE_CROP_FIELDS = (
    "preset",
    "size",
    "scale",
    "min_prob",
    "track_min_prob",
    "detect_max_side",
    "min_face_ratio",
    "all_faces",
    "boxes_from_original",
)


def data_recipe(shards: str) -> dict:
    """The data recipe of the build whose shards a run trains on, for its checkpoints: read from
    BUILD/manifest.toml (BUILD: the shards folder's parent, or the folder of a local URL
    pattern's files' parent) and BUILD/index.json: the recipe's name and sha256
    (`Manifest.digest`), its frame sampling and crop settings, the colour spaces and label mode,
    the build's dataset and split method. Without a build (a remote URL pattern, shards copied
    out of their build, an unreadable recipe) `{"known": False, "reason": ...}`."""
    text = str(shards)
    folder = Path(text)
    remote = "://" in text or text.startswith("pipe:")
    if not remote and not folder.is_dir():  # a local URL pattern: the folder of its files
        folder = folder.parent
    if remote or not folder.is_dir():
        return {"known": False, "reason": f"the shards come from a URL pattern without a build ({text})"}
    build = folder.resolve().parent
    manifest_path = build / "manifest.toml"
    if not manifest_path.is_file():
        return {
            "known": False,
            "reason": f"no manifest.toml in {build}, the folder above the shards: not a build's shards",
        }
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as error:
        return {"known": False, "reason": f"{manifest_path} is unreadable: {error}"}
    try:
        index = json.loads((build / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    index = index if isinstance(index, dict) else {}
    return {
        "known": True,
        "build": build.name,
        "recipe": manifest.name,
        "recipe_sha256": manifest.digest(),
        "dataset": index.get("dataset"),
        "split_method": index.get("split_method"),
        "sampling": manifest.sampling,
        "crop": {name: getattr(manifest.crop, name) for name in RECIPE_CROP_FIELDS},
        "spaces": list(manifest.spaces),
        "labels": manifest.labels.mode,
    }


def model_input(model_config: ModelConfig, crop: int | None, colour_on: str = "host") -> dict:
    """How an image becomes the model's input: the colour spaces stacked in order (3 channels
    each), a centre `crop` x `crop` window of the build's face crop (none: the whole crop), then
    (x / 255 - mean) / std per channel. `colour_on`: where the run made its colour spaces
    (`device`, `host`; `ffx eval` does the same), the same bytes either way."""
    channels = 3 * len(model_config.spaces)
    mean = NEUTRAL if model_config.mean is None else model_config.mean
    std = NEUTRAL if model_config.std is None else model_config.std
    return {
        "spaces": list(model_config.spaces),
        "channels": channels,
        "crop": crop,
        "mean": list(per_channel(mean, channels, "mean")),
        "std": list(per_channel(std, channels, "std")),
        "normalise": "(x / 255 - mean) / std",
        "colour_on": colour_on,
    }


def save_checkpoint(
    run: Path, name: str, model: MCXAPI, config: TrainConfig, step: int, data: dict | None = None
) -> None:
    """Model weights as safetensors; in its metadata (JSON strings) what applying it on another
    machine needs, read back by `describe_checkpoint`: the model config (`model`), the input
    (`input`: spaces, channels, crop, per-channel mean and std), `class_names` (index = class: the
    train samples' `label_name`, or `class0`, `class1`, ... where the shards do not name a
    class), the data recipe of the build it was trained on (`data_recipe`, see `data_recipe`;
    `data`: computed once by the caller, else read here), the training config (`train`), the
    step and the ffx version."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {
        "model": json.dumps(asdict(model.config)),
        "train": json.dumps(asdict(config)),
        "step": str(step),
        "class_names": json.dumps(shard_class_names(config.shards, model.config.num_classes)),
        "input": json.dumps(model_input(model.config, config.crop, config.colour_on)),
        "data_recipe": json.dumps(data if data is not None else data_recipe(config.shards)),
        "ffx_version": __version__,
    }
    with atomic.atomic_path(run / name) as temp:
        save_file(tensors, str(temp), metadata=metadata)


def checkpoint_metadata(checkpoint: Path) -> dict[str, str]:
    """The metadata `save_checkpoint` wrote: model and training configs (JSON) and the step.
    A file that is none (not safetensors, cut short, without ffx's metadata) is one line."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FfxError(f"checkpoint not found: {path} ({EXPECTED_CHECKPOINT})")
    if path.stat().st_size == 0:
        raise FfxError(f"{path} is empty: not a checkpoint; {EXPECTED_CHECKPOINT}")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as error:
        reason = str(error).removeprefix("Error while deserializing header: ")
        raise FfxError(
            f"{path} is not a readable safetensors file ({reason}); {EXPECTED_CHECKPOINT}"
        ) from None
    if "model" not in metadata:
        raise FfxError(
            f"{path} is not an ffx checkpoint (a safetensors file without ffx's model config in its "
            f"metadata); {EXPECTED_CHECKPOINT}"
        )
    return metadata


def load_weights(model: MCXAPI, checkpoint: Path) -> None:
    """The weights of an ffx checkpoint into `model`; one line when the file's tensors cannot be
    read or do not fit."""
    try:
        state = load_file(str(checkpoint))
    except SafetensorError as error:
        reason = str(error).removeprefix("Error while deserializing header: ")
        raise FfxError(
            f"{checkpoint} is not a readable safetensors file ({reason}); {EXPECTED_CHECKPOINT}"
        ) from None
    problems = fit_problems(model.state_dict(), state)
    if problems:
        raise FfxError(
            f"{checkpoint}: its weights do not fit the model its metadata describes "
            f"({model.config.backbone}): {problems}; {EXPECTED_CHECKPOINT}"
        )
    model.load_state_dict(state)


def checkpoint_model_config(metadata: dict[str, str], checkpoint: Path) -> ModelConfig:
    """The model config in a checkpoint's metadata; one line when it is unreadable."""
    try:
        values = json.loads(metadata["model"])
        return ModelConfig(**values | {"spaces": tuple(values["spaces"])})
    except (ValueError, TypeError, KeyError) as error:
        raise FfxError(
            f"{checkpoint}: the model config in its metadata is unreadable ({type(error).__name__}: "
            f"{str(error)[:100]}); {EXPECTED_CHECKPOINT}"
        ) from None


def load_model(checkpoint: Path, device: torch.device | str = "cpu") -> MCXAPI:
    """A model from a checkpoint written by `ffx train` (config from the file's metadata)."""
    model = MCXAPI(checkpoint_model_config(checkpoint_metadata(checkpoint), checkpoint))
    load_weights(model, checkpoint)
    return model.to(device).eval()


def _json_entry(metadata: dict[str, str], key: str, checkpoint: Path, kind: type):
    """A JSON entry of a checkpoint's metadata, None when absent (an older checkpoint); one line
    when it is there but unreadable."""
    if key not in metadata:
        return None
    try:
        value = json.loads(metadata[key])
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise FfxError(
            f"{checkpoint}: the {key!r} entry of its metadata is unreadable; {EXPECTED_CHECKPOINT}"
        )
    return value


def describe_checkpoint(checkpoint: Path) -> dict:
    """What a checkpoint says about itself, from its metadata alone (no weights, no shards):
    everything needed to apply it elsewhere. Keys: `checkpoint`, `ffx_version`, `step`; the model
    (`backbone`, `head`, `num_classes`, `hidden`, `dropout`); its input (`spaces`, `channels`,
    `crop`, per-channel `mean` and `std`, `normalise`, `colour_on`); its classes (`class_names`,
    index = label, and `classes`: label, name and whether it is read as real: named real, pristine
    or original, or class 0 when the names are not known); `data_recipe`, the build it was trained on (see
    `data_recipe`; `known` False for a checkpoint written before ffx recorded it); `training`, the
    run's settings. A file that is no ffx checkpoint is one line (FfxError)."""
    checkpoint = Path(checkpoint)
    metadata = checkpoint_metadata(checkpoint)
    model = checkpoint_model_config(metadata, checkpoint)
    training = _json_entry(metadata, "train", checkpoint, dict) or {}
    given_input = _json_entry(metadata, "input", checkpoint, dict) or {}
    # A checkpoint written before ffx recorded `colour_on` made its spaces on the host.
    colour_on = given_input.get("colour_on", "host")
    shape = model_input(model, given_input["crop"] if given_input else training.get("crop"), colour_on)
    names = _json_entry(metadata, "class_names", checkpoint, list)
    known_names = (
        names is not None
        and len(names) == model.num_classes
        and all(isinstance(name, str) for name in names)
        and not are_placeholders(names)
    )
    if not known_names:  # as `ffx eval` reads such a checkpoint: class 0 is real
        names = placeholder_names(model.num_classes)
    real = [is_real_name(name) if known_names else index == 0 for index, name in enumerate(names)]
    recipe = _json_entry(metadata, "data_recipe", checkpoint, dict) or {
        "known": False,
        "reason": "the checkpoint was written before ffx recorded the data recipe",
    }
    try:
        step = int(metadata.get("step", -1))
    except ValueError:
        step = -1
    return {
        "checkpoint": str(checkpoint),
        "ffx_version": metadata.get("ffx_version"),
        "step": step,
        "backbone": model.backbone,
        "head": model.head,
        "num_classes": model.num_classes,
        "hidden": model.hidden,
        "dropout": model.dropout,
        **shape,
        "class_names": names,
        "classes": [
            {"label": index, "name": name, "real": is_real}
            for index, (name, is_real) in enumerate(zip(names, real))
        ],
        "data_recipe": recipe,
        "training": training,
    }


def save_state(
    run: Path,
    optimizer,
    scaler,
    step: int,
    best: float,
    history: dict,
    world: int,
    carried: tuple[int, Carried] = (0, ()),
) -> None:
    """Optimiser, scaler, step and bookkeeping of the run (rank 0), beside `last.safetensors`;
    `carried`: (epoch, the leftovers it starts with) for a single-process run to replay it."""
    epoch, roles = carried
    state = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "step": step,
        "best": best,
        "history": history,
        "world": world,
        "carried": {"epoch": epoch, "roles": [[list(sample) for sample in role] for role in roles]},
    }
    with atomic.atomic_path(run / STATE) as temp:
        torch.save(state, temp)


def save_random_state(run: Path, rank: int, step: int, device: torch.device) -> None:
    """This rank's CPU and CUDA generators (dropout), so a resumed run draws what it would have."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
    with atomic.atomic_path(run / f"last.rng-{rank}.pt") as temp:
        torch.save({"cpu": torch.get_rng_state(), "cuda": cuda, "step": step}, temp)


def load_run_state(run: Path, placement: Placement) -> tuple[dict, dict]:
    """The saved state and this rank's random state, checked to belong to the same step as the
    weights (a kill between two checkpoint writes would leave them apart)."""
    state = torch.load(run / STATE, map_location="cpu", weights_only=True)
    rng_path = run / f"last.rng-{placement.rank}.pt"
    if not rng_path.is_file():
        raise FfxError(
            f"{rng_path} is missing: resume with as many processes as the run had ({state['world']})"
        )
    random_state = torch.load(rng_path, map_location="cpu", weights_only=True)
    weights_step = int(checkpoint_metadata(run / LAST).get("step", -1))
    if not state["step"] == random_state["step"] == weights_step:
        raise FfxError(
            f"{run}: weights (step {weights_step}), optimiser (step {state['step']}) and random state "
            f"(step {random_state['step']}) disagree: the run was stopped while saving; "
            "start it again from an earlier copy or anew"
        )
    if state["world"] != placement.world:
        raise FfxError(
            f"{run} was trained by {state['world']} processes; resume it with as many, not {placement.world}"
        )
    return state, random_state


def carried_state(state: dict, epoch: int) -> Carried:
    """The leftovers saved for `epoch` (none for another epoch, or a state without them)."""
    carried = state.get("carried") or {}
    if carried.get("epoch") != epoch:
        return ()
    return tuple(tuple((int(shard), str(key)) for shard, key in role) for role in carried["roles"])


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return "none" if value is None else str(value)


def resumed_config(
    run: Path, given: TrainConfig, changed: Collection[str] | None = None
) -> tuple[TrainConfig, int]:
    """The run's saved settings, and the epochs it was to run. Only where the shards are, where
    it runs (`device`) and when it stops (`max_steps`) come from the call, and a larger `epochs`
    (a longer cosine schedule); any other setting among `changed` (the settings the call gave;
    None: those of `given` that differ from the defaults) that differs from the run's is refused
    in one line: the run could not continue exactly."""
    path = run / CONFIG_FILE
    if not path.is_file() or not (run / LAST).is_file():
        raise FfxError(f"nothing to resume in {run} (no {CONFIG_FILE} and {LAST})")
    values = json.loads(path.read_text(encoding="utf-8"))
    known = {item.name for item in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FfxError(f"{path}: unknown settings {', '.join(unknown)} (written by another ffx version)")
    saved = TrainConfig(**LEGACY | values)
    if changed is None:
        defaults = TrainConfig()
        changed = [name for name in known if getattr(given, name) != getattr(defaults, name)]
    for item in fields(TrainConfig):
        name = item.name
        if name not in changed or name in RESUMABLE:
            continue
        old, new = getattr(saved, name), getattr(given, name)
        if name == "epochs" and new < old:
            raise FfxError(
                f"--resume: --epochs {new} is fewer than the {old} of the run in {run}: a resumed run "
                "may only be made longer (its cosine schedule stretched)"
            )
        if name != "epochs" and new != old:
            raise FfxError(
                f"--resume: {setting_name(name)} {_shown(new)} differs from the run's {_shown(old)} "
                f"({path}); only --epochs (more), --shards, --device and --max-steps may change: "
                f"leave it out, or start a new run with --init-from {run / LAST}"
            )
    epochs = max(saved.epochs, given.epochs) if "epochs" in changed else saved.epochs
    config = replace(
        saved,
        shards=given.shards or saved.shards,  # the same shards, perhaps moved
        device=given.device,
        max_steps=given.max_steps,
        epochs=epochs,
    )
    return config, saved.epochs


def init_model_config(config: TrainConfig, model_config: ModelConfig) -> ModelConfig:
    """The model config of a run started `--init-from` an ffx checkpoint: the checkpoint's model
    must be this run's (backbone, head, colour spaces, classes, widths), else one line names the
    difference; its input normalisation is kept unless the run sets its own."""
    if config.pretrained:
        raise FfxError(
            "--init-from and --pretrained both give starting weights: give one of them "
            "(--init-from an ffx checkpoint, --pretrained a timm backbone)"
        )
    path = Path(config.init_from)
    try:
        values = json.loads(checkpoint_metadata(path)["model"])
        source = ModelConfig(**values)
    except (ValueError, TypeError, KeyError) as error:
        raise FfxError(
            f"--init-from {path}: the model config in its metadata is unreadable "
            f"({type(error).__name__}); {EXPECTED_CHECKPOINT}"
        ) from None
    for name, option in (
        ("backbone", "--backbone"),
        ("head", "--head"),
        ("spaces", "--spaces"),
        ("num_classes", "classes of the shards"),
        ("hidden", "setting 'hidden'"),
    ):
        theirs, ours = getattr(source, name), getattr(model_config, name)
        if theirs != ours:
            raise FfxError(
                f"--init-from {path}: its {name} is {_shown(theirs)}, this run's ({option}) is "
                f"{_shown(ours)}; start from a checkpoint of the same model, or change {option}"
            )
    return replace(
        model_config,
        mean=model_config.mean if model_config.mean is not None else source.mean,
        std=model_config.std if model_config.std is not None else source.std,
    )


# ---------------------------------------------------------------- logs


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _clock(seconds: float) -> str:
    """H:MM:SS (?:??:?? when unknown)."""
    if not math.isfinite(seconds):
        return "?:??:??"
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


class ProgressLines:
    """Training progress for a log file (stderr not a terminal: a Slurm job's log), one flushed
    line on stderr every `every` steps:

        train step 150/3000 epoch 2/20 loss 0.4812 lr 9.95e-03 211.4 samples/s elapsed 0:04:10 eta 1:19:12

    `loss`: the mean of the batches' losses since the previous line; samples/s: since the epoch
    began (all processes); eta: the steps left to `stop_at` at this run's pace so far (validation
    included)."""

    def __init__(self, every: int, stop_at: int, steps_per_epoch: int, epochs: int, start: int):
        self.every, self.stop_at, self.steps_per_epoch, self.epochs = every, stop_at, steps_per_epoch, epochs
        self.start, self.started = start, time.monotonic()
        self.window: list[float] = []

    def step(self, step: int, lr: float, rate: float, losses: Sequence[float]) -> None:
        """Step `step` is done (the count of steps so far), its batches' `losses`."""
        self.window += losses
        if step % self.every:
            return
        elapsed = time.monotonic() - self.started
        done = step - self.start
        eta = elapsed / done * (self.stop_at - step) if done > 0 else math.nan
        epoch = (step - 1) // self.steps_per_epoch + 1  # the epoch the step belongs to, from 1
        print(
            f"train step {step}/{self.stop_at} epoch {epoch}/{self.epochs} "
            f"loss {_mean(self.window):.4f} lr {lr:.2e} {rate:.1f} samples/s "
            f"elapsed {_clock(elapsed)} eta {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )
        self.window = []


def tensorboard_writer_class():
    """torch's TensorBoard `SummaryWriter`; without the optional `tensorboard` package, one line."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FfxError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard (or pip install 'ffx[tensorboard]')"
        ) from None
    return SummaryWriter


def write_epoch_scalars(writer, metrics: dict) -> None:
    """An epoch's metrics as TensorBoard scalars at its last step: `epoch/` the training ones,
    `val/` the pooled validation ones, `val_{method}/` each method's (frame and video AUC, BOSC)."""
    step = metrics["step"]
    for key, value in metrics.items():
        if key in ("epoch", "step") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        tag = f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"epoch/{key}"
        writer.add_scalar(tag, value, step)
    for method, levels in (metrics.get("val_methods") or {}).items():
        for level, values in levels.items():
            for name in ("auc", "bosc"):
                if values.get(name) is not None:
                    writer.add_scalar(f"val_{method}/{level}_{name}", values[name], step)
    writer.flush()


@contextmanager
def _closing(writer):
    """Close a TensorBoard writer (None: nothing) when the run ends, however it ends."""
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------- training


def train(
    config: TrainConfig,
    resume: bool = False,
    show_progress: bool = True,
    verify: bool = True,
    warn: Callable[[str], None] = _print_warning,
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
    run = Path(config.run)
    if not config.shards or not config.run:
        raise FfxError("a run needs --shards and --run")
    if log_every < 0:
        raise FfxError(f"--log-every {log_every}: give 0 (no progress lines) or more")
    summary_writer = tensorboard_writer_class() if tensorboard else None  # missing: told now
    placement = place(config.device)
    terminal = Console(stderr=True).is_terminal
    bar = show_progress and placement.main and terminal
    planned_epochs = config.epochs
    if resume:
        config, planned_epochs = resumed_config(run, config, given)
    elif (run / LAST).is_file():
        raise FfxError(f"{run} already holds a run: use --resume, or another --run")
    if config.workers is None:
        config = replace(config, workers=max(1, available_cores() // placement.world))
    config = replace(config, colour_on=resolve_colour_on(config.colour_on, placement.device))
    classes, rarest = check_shards(config)
    val_classes = validation_classes(config)
    by_loss = val_classes is not None and len(val_classes) < 2  # AUC undefined: best by loss
    if by_loss and placement.main:
        warn(one_class_warning(config, val_classes))

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
        load_weights(model, run / LAST)
    elif config.init_from:
        load_weights(model, Path(config.init_from))
    # The normalisation resolved (pretrained backbone's, --init-from checkpoint's, or 0.5) is
    # written to config.json and every checkpoint.
    config = replace(config, mean=model.config.mean, std=model.config.std)
    if verify:
        check_run_shards(config, run, placement, bar)
    data = data_recipe(config.shards)  # the build's recipe, in every checkpoint
    if config.steps_per_epoch is None:  # saved resolved in config.json, so a resume keeps it
        batch = config.classes_per_batch * config.images_per_class * config.accumulate
        config = replace(config, steps_per_epoch=max(1, rarest * classes // (batch * placement.world)))
    steps_per_epoch = config.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch

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
    step, best, history = 0, -math.inf, {}
    carried: tuple[int, Carried] = (0, ())  # leftovers an epoch starts with (a single process)
    if resume:
        state, random_state = load_run_state(run, placement)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        step, best, history = state["step"], state["best"], state["history"]
        carried = (step // steps_per_epoch, carried_state(state, step // steps_per_epoch))
        torch.set_rng_state(random_state["cpu"])
        if placement.device.type == "cuda" and random_state["cuda"].numel():
            torch.cuda.set_rng_state(random_state["cuda"], placement.device)
        if placement.main:
            _trim_metrics(run / METRICS_FILE, step)
            if config.epochs != planned_epochs:  # the next --resume goes on with the longer run
                atomic.write_json(run / CONFIG_FILE, asdict(config) | {"spaces": list(config.spaces)})
                old_lr = cosine_lr(step, planned_epochs * steps_per_epoch, config.lr)
                warn(
                    f"resuming at step {step} with --epochs {config.epochs} (the run had "
                    f"{planned_epochs}): a longer cosine schedule, {total_steps} steps in all; "
                    f"the learning rate goes from {old_lr:.3g} to "
                    f"{cosine_lr(step, total_steps, config.lr):.3g}"
                )
    elif placement.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic.write_json(run / CONFIG_FILE, asdict(config) | {"spaces": list(config.spaces)})
    if placement.world > 1:
        dist.barrier()  # the run folder exists before any rank writes into it

    trainer = TrainStep(model, config)
    wrapped = trainer
    if placement.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            trainer, find_unused_parameters=config.freeze_epochs > 0
        )
    if config.compile:
        wrapped = torch.compile(wrapped)
    stop_at = min(total_steps, config.max_steps or total_steps)
    report = TrainReport(run, step, total_steps, step // steps_per_epoch)
    lines = None
    if show_progress and placement.main and not terminal and log_every > 0:
        lines = ProgressLines(log_every, stop_at, steps_per_epoch, config.epochs, step)
    writer = None
    if summary_writer is not None and placement.main:
        writer = summary_writer(log_dir=str(run / TENSORBOARD_DIR), purge_step=step if resume else None)
    with (
        stage_progress("train", stop_at, "steps", "samples", bar) as progress,
        _closing(writer),
    ):
        progress.resume_at(step)
        while step < stop_at:
            epoch = step // steps_per_epoch
            trainer.frozen = epoch < config.freeze_epochs
            model.train()
            losses, started, seen, short = [], time.monotonic(), 0, 0
            done_in_epoch = (step % steps_per_epoch) * config.accumulate  # a resumed run skips these
            leftovers = carried[1] if carried[0] == epoch else ()
            carried, carry_out = (epoch, leftovers), {}
            stream = iter(epoch_batches(config, epoch, placement, done_in_epoch, leftovers))
            batches = _collect_carries(stream, carry_out)
            while step < stop_at and step // steps_per_epoch == epoch:
                lr = cosine_lr(step, total_steps, config.lr)
                optimizer.param_groups[0]["lr"] = 0.0 if trainer.frozen else lr
                optimizer.param_groups[1]["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                stepped, step_losses = seen, len(losses)
                for _ in range(config.accumulate):
                    batch_data = next(batches)
                    if isinstance(batch_data, Short):  # the pass ran out: no data, no update
                        short += 1
                        continue
                    images = model_images(
                        batch_data["image"],
                        placement.device,
                        config.spaces,
                        config.colour_on,
                        model.config.mean,
                        model.config.std,
                    )
                    if placement.device.type == "cuda" and config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    labels = batch_data["label"].to(placement.device, non_blocking=True)
                    with torch.autocast(
                        placement.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                    ):
                        loss, parts = wrapped(images, labels)
                    loss = loss / config.accumulate
                    (scaler.scale(loss) if scaler else loss).backward()
                    losses.append(parts["cross_entropy"] + config.rank_weight * parts["rank"])
                    seen += len(labels)
                if seen > stepped:  # else every batch of the step was Short: nothing to step with
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                step += 1
                rate = seen * placement.world / max(time.monotonic() - started, 1e-9)
                progress.advance(1, seen - stepped)
                recent = losses[-20:] or [math.nan]
                progress.describe(
                    f"train loss {sum(recent) / len(recent):.3f} lr {lr:.2e} {rate:.1f} samples/s"
                )
                if lines is not None:
                    lines.step(step, lr, rate, losses[step_losses:])
                if writer is not None and len(losses) > step_losses:
                    writer.add_scalar("train/loss", _mean(losses[step_losses:]), step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/samples_per_second", rate, step)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done and placement.world == 1:
                for _ in batches:  # the workers' Carry items: what the next epoch starts with
                    pass
                roles = max(len(carry_out), 1)
                carried = (epoch + 1, tuple(carry_out.get(role, ()) for role in range(roles)))
            del batches, stream  # its loader workers end before validation starts others
            metrics = {
                "epoch": epoch,
                "step": step,
                "loss": sum(losses) / max(len(losses), 1),
                "lr": lr,
                "samples_per_second": seen * placement.world / max(time.monotonic() - started, 1e-9),
                "frozen_backbone": trainer.frozen,
                "short_batches": short,  # batches the epoch's pass could not give (one process)
            }
            if placement.main:
                if epoch_done:
                    metrics |= {
                        f"val_{key}": value for key, value in validate(model, config, placement).items()
                    }
                    history[str(epoch)] = metrics
                    score = best_score(metrics, by_loss)
                    if not math.isnan(score) and score > best:
                        best = score
                        save_checkpoint(run, BEST, model, config, step, data)
                    with open(run / METRICS_FILE, "a", encoding="utf-8") as log:
                        log.write(json.dumps(_plain_json(metrics)) + "\n")
                    if writer is not None:
                        write_epoch_scalars(writer, metrics)
                save_state(run, optimizer, scaler, step, best, history, placement.world, carried)
                save_checkpoint(run, LAST, model, config, step, data)
            save_random_state(run, placement.rank, step, placement.device)
            report = TrainReport(run, step, total_steps, step // steps_per_epoch, metrics)
            if placement.world > 1:
                dist.barrier()
    return report


def _collect_carries(items, carried: dict):
    """The loader's batches and `Short`s; each `Carry` (a worker's leftovers) goes to `carried`."""
    for item in items:
        if isinstance(item, Carry):
            carried[item.role] = item.samples
        else:
            yield item


# ---------------------------------------------------------------- evaluation


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
    """Frame- and video-level BOSC and AUC of `model` on a split (centre crops, no pairs; class 0
    real, any other class fake; unlabelled samples left out), the mean cross-entropy of its
    labelled frames (`loss`), and `methods`: for each manipulation method, the metrics of the
    split's reals against that method's fakes, as `ffx eval` reports them
    (`ffx.train.metrics.method_metrics`). The samples are scored as `ffx eval` scores them, the
    colour spaces made where `colour_on` says (`auto`: on a GPU, on the device)."""
    from ffx.train.evaluate import score_split  # it imports this module

    colour_on = resolve_colour_on(colour_on, device)
    rows = score_split(model, shards, split, crop, device, workers, real=(0,), colour_on=colour_on)
    mark_rows(rows, {0})
    labelled = [row for row in rows if row["fake"] is not None]
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
