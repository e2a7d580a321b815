"""A run folder's state: its settings (config.json), checkpoints, and what a resume reads back.

Beside `last.safetensors` (see `ffx.model.checkpoint`) the optimiser, schedule and bookkeeping
go to a plain tensor file read back with `weights_only=True`, and each rank's random state to
one of its own, so a resumed run draws what it would have.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from ffx.errors import FfxError
from ffx.model.checkpoint import (
    EXPECTED_CHECKPOINT,
    Placement,
    checkpoint_metadata,
    data_recipe,
    save_checkpoint,
)
from ffx.model.mcx_api import MCXAPI, ModelConfig, load_plain
from ffx.pipeline.engine import atomic
from ffx.train.config import LEGACY, RESUMABLE, TrainConfig, setting_name
from ffx.train.metrics import shard_class_names
from ffx.train.stream import Carried

CONFIG_FILE = "config.json"
LAST, BEST, STATE = "last.safetensors", "best.safetensors", "last.state.pt"


def save_config(run: Path, config: TrainConfig) -> None:
    """The run's settings, resolved, to RUN/config.json (what a resume reads back)."""
    atomic.write_json(run / CONFIG_FILE, asdict(config) | {"spaces": list(config.spaces)})


def save_run_checkpoint(
    run: Path, name: str, model: MCXAPI, config: TrainConfig, step: int, recipe: dict | None = None
) -> None:
    """`model` as the checkpoint RUN/`name` (`ffx.model.checkpoint.save_checkpoint`), described
    by the run's settings: its crop and colour, the train samples' class names, and the data
    recipe of its build (`recipe`: computed once by the caller, else read here)."""
    save_checkpoint(
        run / name,
        model,
        step,
        crop=config.crop,
        colour_on=config.colour_on,
        class_names=shard_class_names(config.shards, model.config.num_classes),
        recipe=recipe if recipe is not None else data_recipe(config.shards),
        training=asdict(config),
    )


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


def restore_random_state(random_state: dict, device: torch.device) -> None:
    """This rank's CPU and CUDA generators as `save_random_state` saved them."""
    torch.set_rng_state(random_state["cpu"])
    if device.type == "cuda" and random_state["cuda"].numel():
        torch.cuda.set_rng_state(random_state["cuda"], device)


def _load_saved(path: Path) -> dict:
    """A state file `ffx train` saved (plain tensors and numbers only), or one line: a file with
    pickled code or objects (not ffx's), or one cut short, is refused without running it."""
    state = load_plain(path, "a state file written by `ffx train`", RUN_STATE_HINT)
    if not isinstance(state, dict):
        raise FfxError(f"{path} is not a state file written by `ffx train`; {RUN_STATE_HINT}")
    return state


RUN_STATE_HINT = "start the run anew, or from an earlier copy of its folder"


def load_run_state(run: Path, placement: Placement) -> tuple[dict, dict]:
    """The saved state and this rank's random state, checked to belong to the same step as the
    weights (a kill between two checkpoint writes would leave them apart)."""
    state = _load_saved(run / STATE)
    rng_path = run / f"last.rng-{placement.rank}.pt"
    if not rng_path.is_file():
        raise FfxError(
            f"{rng_path} is missing: resume with as many processes as the run had ({state['world']})"
        )
    random_state = _load_saved(rng_path)
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
    """A setting's value as the user gives it: a tuple comma-separated, None as none."""
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
