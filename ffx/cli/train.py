"""Training and evaluating a detector: train, eval."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ffx.cli.common import DeviceOpt, SplitOpt, WorkersOpt, console, warn
from ffx.cli.reports import print_eval
from ffx.train.config import TrainConfig, given_settings


def default_of(name: str) -> object:
    """A training setting's default as TrainConfig declares it: the one source of the numbers that
    `ffx train --help` shows."""
    return next(item.default for item in fields(TrainConfig) if item.name == name)


def train(
    shards: Annotated[
        str, typer.Option("--shards", help="BUILD/shards (with index.json), or a shard URL pattern.")
    ],
    run: Annotated[Path, typer.Option("--run", help="Run folder: config, metrics.jsonl, checkpoints.")],
    config: Annotated[Path | None, typer.Option("--config", help="A JSON file of training settings.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="mcx-api-paper: the paper's settings.")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help=f"Any timm model ({default_of('backbone')}).")
    ] = None,
    spaces: Annotated[
        str | None, typer.Option("--spaces", help="Colour spaces of the input, e.g. rgb,ycbcr.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help=f"Epochs to train ({default_of('epochs')}).")
    ] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option("--steps-per-epoch", min=1, help="Default: from index.json class counts.")
    ] = None,
    classes: Annotated[
        int | None, typer.Option("--classes", min=2, help="Number of classes (default: from index.json).")
    ] = None,
    classes_per_batch: Annotated[
        int | None, typer.Option("--classes-per-batch", min=1, help=f"P ({default_of('classes_per_batch')}).")
    ] = None,
    images_per_class: Annotated[
        int | None, typer.Option("--images-per-class", min=1, help=f"K ({default_of('images_per_class')}).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help=f"SGD learning rate ({default_of('lr')}), cosine schedule.")
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(
            "--crop", min=8, help=f"Training crop side ({default_of('crop')}; random, centred for eval)."
        ),
    ] = None,
    freeze_epochs: Annotated[
        int | None,
        typer.Option(
            "--freeze-epochs", min=0, help=f"Epochs with a frozen backbone ({default_of('freeze_epochs')})."
        ),
    ] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto | bf16 | fp16 | fp32.")] = None,
    accumulate: Annotated[int | None, typer.Option("--accumulate", min=1, help="Batches per step.")] = None,
    compile_model: Annotated[bool | None, typer.Option("--compile", help="torch.compile the model.")] = None,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained",
            help="A local timm checkpoint of the RGB backbone; its input mean/std (timm's) are used.",
        ),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            "--head", help="pairwise (MCX-API, default) | linear (cross-entropy on the backbone feature)."
        ),
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help=f"Mirror half of the training samples (default: {'on' if default_of('flip') else 'off'}).",
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Start a new run from the weights of an ffx checkpoint (same backbone, head, spaces).",
        ),
    ] = None,
    colour_on: Annotated[
        str | None,
        typer.Option(
            "--colour-on",
            help="Where Lab/HSV/YCbCr are made from RGB: device (in the step; the loader decodes "
            "rgb.png alone) | host (loader workers) | auto (default: device on a GPU). Same bytes.",
        ),
    ] = None,
    workers: WorkersOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help=f"Seed of the shard order, crops, flips and pairs ({default_of('seed')})."
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps (resume later).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --run where it stopped; only --epochs (more), --shards, "
            "--device and --max-steps may change.",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Check the shards against index.json (sha256, size) first; matches are remembered in --run.",
        ),
    ] = True,
    log_every: Annotated[
        int,
        typer.Option(
            "--log-every",
            min=0,
            help="When stderr is not a terminal (a Slurm log): a plain progress line every N steps "
            "(0: none); a terminal gets the progress bar.",
        ),
    ] = 50,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Write TensorBoard event files to RUN/tensorboard (needs: pip install tensorboard).",
        ),
    ] = False,
) -> None:
    """Train MCX-API on shards (torchrun for several GPUs or processes); resumable."""
    from ffx.train.loop import train as run_training

    given = given_settings(
        preset,
        config,
        shards=shards,
        run=str(run),
        backbone=backbone,
        spaces=spaces,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        classes=classes,
        classes_per_batch=classes_per_batch,
        images_per_class=images_per_class,
        lr=lr,
        crop=crop,
        freeze_epochs=freeze_epochs,
        precision=precision,
        accumulate=accumulate,
        compile=compile_model,
        pretrained=str(pretrained) if pretrained else None,
        head=head,
        flip=flip,
        init_from=str(init_from) if init_from else None,
        colour_on=colour_on,
        workers=workers,
        device=device,
        seed=seed,
        max_steps=max_steps,
    )
    settings = TrainConfig(**given)

    report = run_training(
        settings,
        resume=resume,
        show_progress=True,  # a bar on a terminal's stderr, else a line every --log-every steps
        verify=verify,
        warn=warn,  # from rank 0 only
        given=set(given),
        log_every=log_every,
        tensorboard=tensorboard,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the job
        return
    metrics = ", ".join(
        f"{name} {value:.4g}" for name, value in report.metrics.items() if isinstance(value, float)
    )
    console.print(
        f"train: step {report.step} of {report.total_steps} in {escape(str(report.run))}; {metrics}"
    )


def evaluate(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="A .safetensors file written by ffx train.")
    ],
    shards: Annotated[
        list[str],
        typer.Option(
            "--shards",
            help="BUILD/shards of the data to score; repeat it to score several builds (cross-dataset).",
        ),
    ],
    split: SplitOpt = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for metrics.json, predictions.parquet, roc.png, confusion.png "
            "(default: {checkpoint}.eval-{split}.json beside the checkpoint, metrics only).",
        ),
    ] = None,
    crop: Annotated[
        int | None, typer.Option("--crop", min=8, help="Centre crop side (default: the run's).")
    ] = None,
    colour_on: Annotated[
        str | None,
        typer.Option(
            "--colour-on",
            help="device | host | auto: where the colour spaces are made (default: as the run did).",
        ),
    ] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Check the shards against index.json (sha256, size) first; matches are remembered "
            "beside the checkpoint.",
        ),
    ] = True,
) -> None:
    """BOSC, AUC, ACC, EER and AP of a checkpoint, frame and video level, per method and per build."""
    from ffx.train.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        checkpoint,
        shards,
        split,
        crop=crop,
        workers=workers,
        device=device,
        verify=verify,
        show_progress=console.is_terminal,
        out=out,
        colour_on=colour_on,
    )
    print_eval(metrics)
