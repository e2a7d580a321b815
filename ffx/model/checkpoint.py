"""Checkpoints and model placement: a model's device, its input, and its safetensors file.

A checkpoint describes itself in its metadata (`describe_checkpoint`): model, input (spaces,
crop, normalisation), classes, and the data recipe of the build it was trained on; applying it
reads nothing else. Training (`ffx.train`), `ffx eval` and `ffx predict` / `ffx explain` all read
checkpoints and place models through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ffx import __version__
from ffx.errors import FfxError, ManifestError
from ffx.model.colour import rgb_to_spaces
from ffx.model.mcx_api import MCXAPI, NEUTRAL, ModelConfig, fit_problems, per_channel
from ffx.pipeline.engine import atomic
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.recipe.schema import is_real_name

EXPECTED_CHECKPOINT = (
    "expected a checkpoint written by `ffx train` (RUN/last.safetensors or RUN/best.safetensors)"
)


# ---------------------------------------------------------------- devices and processes


@dataclass(frozen=True)
class Placement:
    """This process's place in a (possibly single-process) job."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and logs."""
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


# ---------------------------------------------------------------- the model's input


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
        # The loader's batches are (N, H, W, C) arrays seen as (N, C, H, W): channels-last in
        # memory. The converted batch gets that layout too, so both paths run the same kernels
        # on the same bytes: a CPU whose convolutions pick another algorithm for another layout
        # gave a first loss 3e-8 apart (CI's, not every CPU).
        images = images.contiguous(memory_format=torch.channels_last)
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


def placeholder_names(classes: int) -> list[str]:
    """The names a checkpoint gets when the shards do not tell them: class0, class1, ..."""
    return [f"class{index}" for index in range(classes)]


def are_placeholders(names: Sequence[str]) -> bool:
    """Whether `names` are the placeholders `placeholder_names` gives (the classes' names unknown)."""
    return list(names) == placeholder_names(len(names))


def save_checkpoint(
    path: Path,
    model: MCXAPI,
    step: int,
    *,
    crop: int | None,
    colour_on: str,
    class_names: Sequence[str],
    recipe: dict,
    training: dict,
) -> None:
    """Model weights as safetensors at `path`; in its metadata (JSON strings) what applying it on
    another machine needs, read back by `describe_checkpoint`: the model config (`model`), the
    input (`input`: spaces, channels, `crop`, per-channel mean and std, `colour_on`),
    `class_names` (index = class: the train samples' `label_name`, or `class0`, `class1`, ...
    where the shards do not name a class), the data recipe of the build it was trained on
    (`data_recipe`, see `data_recipe`), the training settings (`train`), the step and the ffx
    version."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {
        "model": json.dumps(asdict(model.config)),
        "train": json.dumps(training),
        "step": str(step),
        "class_names": json.dumps(list(class_names)),
        "input": json.dumps(model_input(model.config, crop, colour_on)),
        "data_recipe": json.dumps(recipe),
        "ffx_version": __version__,
    }
    with atomic.atomic_path(path) as temp:
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
