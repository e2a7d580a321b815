"""Training settings: `TrainConfig` (a run's config.json), presets, and how options, a config
file and a preset combine. No torch here: the command line reads its defaults from this module."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from ffx.errors import FfxError

COLOUR_ON = ("auto", "device", "host")  # where the spaces other than RGB are made (`colour_on`)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; saved as config.json. Defaults are the public code's and the paper's."""

    shards: str = ""
    run: str = ""
    backbone: str = "legacy_xception"
    spaces: tuple[str, ...] = ("rgb",)
    epochs: int = 100
    steps_per_epoch: int | None = None  # default: from shards/index.json
    classes: int | None = None  # default: from shards/index.json; needed for a URL pattern
    classes_per_batch: int = 3
    images_per_class: int = 9
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    freeze_epochs: int = 8  # the backbone does not learn during the first epochs
    margin: float = 0.05
    rank_weight: float = 1.0
    distance: str = "euclidean"
    crop: int = 448
    hidden: int = 512
    dropout: float = 0.5
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    channels_last: bool = True  # CUDA only
    compile: bool = False
    accumulate: int = 1  # batches per optimiser step
    workers: int | None = None  # loader processes; default: this rank's share of the cores
    seed: int = 0
    pretrained: str | None = None  # a local timm checkpoint of the RGB backbone
    device: str = "auto"
    val_split: str = "val"
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps; --resume goes on
    head: str = "pairwise"  # pairwise (MCX-API) | linear (plain cross-entropy on the backbone feature)
    flip: bool = True  # mirror half of the training samples (APINet's and the public code's flip)
    # Input normalisation per channel, (x / 255 - mean) / std; None: resolved when the run starts
    # (the --pretrained backbone's timm pretrained_cfg, or 0.5) and written to config.json.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    init_from: str | None = None  # start from the weights of an ffx checkpoint (a new run)
    # Where Lab, HSV and YCbCr are made: `device` (the loader decodes RGB alone; the step converts
    # on the training device), `host` (the loader's workers), `auto`: device on a GPU, host on a
    # CPU; resolved when the run starts and written to config.json. Both give the same bytes.
    colour_on: str = "auto"

    def __post_init__(self) -> None:
        for name in ("spaces", "mean", "std"):  # JSON gives lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.colour_on not in COLOUR_ON:
            raise FfxError(f"--colour-on must be {', '.join(COLOUR_ON)}, got {self.colour_on!r}")


PRESETS: dict[str, dict] = {
    # Everything the paper (and its public code, where the paper is silent) says.
    "mcx-api-paper": {
        "backbone": "legacy_xception",
        "spaces": ("rgb",),
        "epochs": 100,
        "classes_per_batch": 3,
        "images_per_class": 9,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "freeze_epochs": 8,
        "margin": 0.05,
        "rank_weight": 1.0,
        "crop": 448,
    },
}


def make_config(preset: str | None = None, config_file: Path | None = None, **options) -> TrainConfig:
    """Defaults < preset < config file (JSON) < options that are not None."""
    return TrainConfig(**given_settings(preset, config_file, **options))


def given_settings(preset: str | None = None, config_file: Path | None = None, **options) -> dict:
    """The settings a preset, a config file (JSON) and the options that are not None set, in that
    order of precedence (what `make_config` lays over the defaults; what `--resume` checks)."""
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise FfxError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file is not None:
        try:
            values.update(json.loads(Path(config_file).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise FfxError(f"cannot read config {config_file}: {error}") from None
    values.update({name: value for name, value in options.items() if value is not None})
    known = {item.name for item in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FfxError(f"unknown training settings: {', '.join(unknown)}")
    if "spaces" in values:
        from ffx.pipeline.media.color import parse_spaces  # cv2: not needed for `ffx --help`

        values["spaces"] = parse_spaces(values["spaces"])
    return values


# Settings --resume takes from the call: where the shards are, where it runs, when it stops.
RESUMABLE = ("shards", "run", "device", "max_steps")
# Settings of config.json written before they existed: what those runs did.
LEGACY = {"flip": False, "colour_on": "host"}
CLI_FLAGS = {  # settings that `ffx train` has an option for
    "shards", "run", "backbone", "spaces", "epochs", "steps_per_epoch", "classes", "classes_per_batch",
    "images_per_class", "lr", "crop", "freeze_epochs", "precision", "accumulate", "compile",
    "pretrained", "workers", "device", "seed", "max_steps", "head", "flip", "init_from", "colour_on",
}  # fmt: skip


def frozen_random_backbone(config: TrainConfig) -> str:
    """A line when the run would freeze a randomly initialised backbone (no --pretrained or
    --init-from, --freeze-epochs > 0): only the head learns for those epochs; "" otherwise."""
    if config.freeze_epochs <= 0 or config.pretrained or config.init_from:
        return ""
    return (
        "the backbone starts from random weights (no --pretrained or --init-from) and is frozen for "
        f"the first {config.freeze_epochs} epochs (--freeze-epochs): only the head learns then; give "
        "--pretrained FILE, or --freeze-epochs 0"
    )


def setting_name(name: str) -> str:
    """A setting as the user gives it: its `ffx train` option, else its config-file key."""
    return f"--{name.replace('_', '-')}" if name in CLI_FLAGS else f"setting {name!r}"
