"""The `ffx` command line: parses options and calls the library; nothing else lives here."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from ffx import __version__
from ffx.errors import FfxError, WorkerBug, os_error_line
from ffx.pipeline.engine.registry import command_of

app = typer.Typer(
    name="ffx",
    help="Reproducible face-forgery datasets: index, extract, crop, shard, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Long paths and errors stay on one line in logs; `:name:` in a file name stays text, not an emoji.
console = Console(soft_wrap=True, emoji=False)
error_console = Console(stderr=True, emoji=False)

ManifestArg = Annotated[
    str,
    typer.Argument(help="A manifest TOML file, or the name of a recipe in manifests/ (see `ffx recipes`)."),
]
RootOpt = Annotated[Path, typer.Option("--root", help="Dataset root folder (never written into a recipe).")]
BuildOpt = Annotated[Path, typer.Option("--build", help="Build directory: every stage's tables go here.")]
BuildArg = Annotated[Path, typer.Argument(help="Build directory made by `ffx index`.")]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Fingerprint input videos by sha256 in build.json (reads them all).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a manifest field: --set split.source=seeded (repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"ffx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """ffx: deepfake-detection datasets and the MCX-API detector, reproducibly."""


@app.command()
def index(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    splits: Annotated[
        Path | None,
        typer.Option("--splits", help="Folder with official split files (FF++ train/val/test.json)."),
    ] = None,
    sample: Annotated[str | None, typer.Option("--sample", help="Frame sampling, e.g. first:30.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the group-aware split.")] = None,
    assignments: SetOpt = None,
) -> None:
    """Scan a dataset into BUILD/videos.parquet (keys, labels, groups, splits)."""
    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.index import run_index

    recipe = load_manifest(manifest, {"sampling": sample, "seed": seed}, assignments)
    report = run_index(recipe, root, build, splits)
    console.print(f"indexed [bold]{report.videos}[/] videos into {escape(str(report.table_path))}")
    console.print("  by split: " + escape(", ".join(f"{k} {v}" for k, v in report.by_split.items())))
    console.print("  by label: " + escape(", ".join(f"{k} {v}" for k, v in report.by_label.items())))
    for note in report.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


PartOpt = Annotated[
    str | None,
    typer.Option("--part", help="Do part i of n (e.g. 0/4); default: SLURM_ARRAY_TASK_ID/COUNT, else all."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, help="Worker processes (default: all cores).")
]


FailOpt = Annotated[
    bool,
    typer.Option("--fail-on-error", help="Exit 1 if any video failed or gave no output (listed at the end)."),
]


@app.command()
def extract(
    build: BuildArg,
    part: PartOpt = None,
    workers: WorkersOpt = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help=(
                "first:N | stride:S:O[:MAX] | linspace:N (rounded) | dfb-linspace:N (DeepfakeBench's, "
                "truncated) | all; sets the recipe's `sampling` (first:30)."
            ),
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Decoders to try in order, comma-separated; sets `extract.backends` (pyav,decord,opencv).",
        ),
    ] = None,
    png_level: Annotated[
        int | None,
        typer.Option("--png-level", min=0, max=9, help="PNG zlib level; sets `extract.png_level` (1)."),
    ] = None,
    keep_frames: Annotated[
        bool | None,
        typer.Option(
            "--keep-frames/--no-keep-frames",
            help="Store every frame as a PNG, or only its row and pixel hash; sets `extract.keep_frames` "
            "(true, except in a build made by `ffx build`).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds without a decoded frame before a decoder counts as hung."),
    ] = 60.0,
    root: Annotated[
        Path | None, typer.Option("--root", help="Dataset root, if it moved since `ffx index`.")
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Redo videos that failed before (partial, decode_error, ...)."),
    ] = False,
    fail_on_error: FailOpt = False,
) -> None:
    """Decode the sampled frames of every video into BUILD/frames/ (PNG) and frames.parquet.

    An option that changes a recipe field is written into BUILD/manifest.toml and redoes the videos."""
    from ffx.pipeline.engine.parts import parse_part
    from ffx.pipeline.stages.extract import run_extract

    report = run_extract(
        build,
        part=parse_part(part),
        workers=workers,
        sampling=sample,
        backends=tuple(name.strip() for name in backend.split(",") if name.strip()) if backend else None,
        png_level=png_level,
        keep_frames=keep_frames,
        stall_seconds=timeout,
        root=root,
        retry_failed=retry_failed,
        show_progress=console.is_terminal,
    )
    print_stage_report(report)
    if fail_on_error and report.failed:
        raise typer.Exit(1)


@app.command()
def crop(
    build: BuildArg,
    part: PartOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")] = "auto",
    workers: WorkersOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Frames per MTCNN batch (default: 8 CPU, 32 GPU)."),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="mcx-api | square-1.3 | aligned; sets `crop.preset`.")
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", min=16, help="Output side in pixels; sets `crop.size`.")
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option("--scale", help="square-1.3: box side / longer face side; sets `crop.scale`."),
    ] = None,
    min_prob: Annotated[
        float | None,
        typer.Option("--min-prob", help="Least MTCNN probability of a face; sets `crop.min_prob`."),
    ] = None,
    track_min_prob: Annotated[
        float | None,
        typer.Option(
            "--track-min-prob",
            help="Keep a face down to this probability where it continues a track (e.g. 0.9); "
            "sets `crop.track_min_prob`.",
        ),
    ] = None,
    detect_max_side: Annotated[
        int | None,
        typer.Option(
            "--detect-max-side",
            min=32,
            help="Detect on a copy with at most this long side; sets `crop.detect_max_side`.",
        ),
    ] = None,
    min_face_ratio: Annotated[
        float | None,
        typer.Option(
            "--min-face-ratio",
            help="Skip faces under this share of frame 0's largest (0: none); sets `crop.min_face_ratio`.",
        ),
    ] = None,
    all_faces: Annotated[
        bool | None,
        typer.Option(
            "--all-faces/--main-face", help="Keep every face track, or the main one; sets `crop.all_faces`."
        ),
    ] = None,
    boxes_from_original: Annotated[
        bool | None,
        typer.Option(
            "--boxes-from-original/--detect-fakes",
            help="Fakes reuse their original's boxes (FF++, DFDC), or are detected; "
            "sets `crop.boxes_from_original`.",
        ),
    ] = None,
    png_level: Annotated[
        int | None, typer.Option("--png-level", min=0, max=9, help="PNG zlib level; sets `crop.png_level`.")
    ] = None,
    landmarks: Annotated[
        str | None,
        typer.Option(
            "--landmarks",
            help="none | dlib68: dense landmarks per face (the `landmarks` extra); sets `crop.landmarks`.",
        ),
    ] = None,
    landmarks_model: Annotated[
        Path | None,
        typer.Option(
            "--landmarks-model",
            help="Another dlib shape model file (e.g. 81 points) for the landmarks; sets `crop.landmarks`.",
        ),
    ] = None,
    mask: Annotated[
        bool | None,
        typer.Option("--mask/--no-mask", help="A convex-hull landmark mask per crop; sets `crop.mask`."),
    ] = None,
    fail_on_error: FailOpt = False,
) -> None:
    """Detect faces (MTCNN) in BUILD's frames and write crops to BUILD/faces/ plus faces.parquet.

    An option that changes a recipe field is written into BUILD/manifest.toml and redoes the videos."""
    from ffx.pipeline.engine.parts import parse_part
    from ffx.pipeline.stages.crop import run_crop

    report = run_crop(
        build,
        part=parse_part(part),
        device=device,
        workers=workers,
        batch_size=batch_size,
        show_progress=console.is_terminal,
        preset=preset,
        size=size,
        scale=scale,
        min_prob=min_prob,
        track_min_prob=track_min_prob,
        detect_max_side=detect_max_side,
        min_face_ratio=min_face_ratio,
        all_faces=all_faces,
        boxes_from_original=boxes_from_original,
        png_level=png_level,
        landmarks=crop_landmarks(landmarks, landmarks_model),
        mask=mask,
    )
    print_stage_report(report)
    if fail_on_error and report.failed:
        raise typer.Exit(1)


def crop_landmarks(landmarks: str | None, model: Path | None) -> str | None:
    """`crop.landmarks` from --landmarks or --landmarks-model (its absolute path: the recipe is
    read again from other folders)."""
    if landmarks is not None and model is not None:
        raise FfxError("give --landmarks or --landmarks-model, not both")
    if landmarks is not None and landmarks not in ("none", "dlib68"):
        raise FfxError(f"--landmarks {landmarks}: choose none or dlib68 (or --landmarks-model FILE)")
    return str(model.resolve()) if model is not None else landmarks


@app.command()
def qa(
    build: BuildArg,
    videos: Annotated[int, typer.Option("--videos", min=1, help="How many videos get a contact sheet.")] = 24,
) -> None:
    """Contact sheets of the crops (BUILD/qa/*.png), the most faceless videos first."""
    from ffx.pipeline.stages.qa import write_qa

    report = write_qa(build, videos=videos)
    console.print(
        f"qa: {len(report.sheets)} contact sheets in {escape(str(report.folder))}; every video in worst.tsv"
    )
    for key, missing, frames in report.worst[:10]:
        if missing:
            console.print(f"  {escape(key)}: {missing} of {frames} frames without a face")


@app.command()
def shard(
    build: BuildArg,
    part: PartOpt = None,
    workers: WorkersOpt = None,
    spaces: Annotated[
        str | None,
        typer.Option("--spaces", help="Colour spaces per sample, e.g. rgb,lab,hsv,ycbcr; sets `spaces`."),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option("--shard-size", min=1, help="Most samples per shard; sets `shard.max_count`."),
    ] = None,
    shard_bytes: Annotated[
        int | None, typer.Option("--shard-bytes", min=1, help="Most bytes per shard; sets `shard.max_bytes`.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the sample order; sets `shard.seed`.")
    ] = None,
    png_level: Annotated[
        int | None,
        typer.Option(
            "--png-level",
            min=0,
            max=9,
            help="PNG zlib level of the converted spaces; sets `shard.png_level`.",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="all: a PNG per colour space (what the public code reads); rgb: rgb.png alone, the "
            "other spaces derived exactly when read. Sets `shard.stored_spaces`.",
        ),
    ] = None,
    keep_samples: Annotated[
        bool | None,
        typer.Option(
            "--keep-samples/--drop-samples",
            help="Keep BUILD/samples/ after the shards are written (a layout change then skips "
            "re-encoding), or remove it; sets `shard.keep_samples`.",
        ),
    ] = None,
    strict: StrictOpt = False,
    fail_on_error: FailOpt = False,
) -> None:
    """Pack every crop, in each colour space, into WebDataset shards: BUILD/shards/{split}-NNNNNN.tar.

    An option that changes a recipe field is written into BUILD/manifest.toml and redoes what it shapes;
    once the shards are laid out, BUILD/build.json records the build."""
    from ffx.pipeline.engine.parts import parse_part
    from ffx.pipeline.stages.record import write_build_record
    from ffx.pipeline.stages.shard import run_shard

    report = run_shard(
        build,
        part=parse_part(part),
        workers=workers,
        show_progress=console.is_terminal,
        spaces=spaces,
        max_count=shard_size,
        max_bytes=shard_bytes,
        seed=seed,
        png_level=png_level,
        stored_spaces=store,
        keep_samples=keep_samples,
    )
    if report.merged:
        write_build_record(build, strict=strict)
    print_stage_report(report)
    if fail_on_error and report.failed:
        raise typer.Exit(1)


@app.command()
def build(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    splits: Annotated[
        Path | None,
        typer.Option("--splits", help="Folder with official split files (FF++ train/val/test.json)."),
    ] = None,
    part: PartOpt = None,
    workers: WorkersOpt = None,
    device: Annotated[
        str, typer.Option("--device", help="Face detection device: auto | cpu | cuda[:N].")
    ] = "auto",
    keep_frames: Annotated[
        bool | None,
        typer.Option(
            "--keep-frames/--no-keep-frames",
            help="Also store every full frame as a PNG under BUILD/frames/ (default: the recipe's "
            "`extract.keep_frames`, false: frames are decoded once, hashed and cropped); sets it.",
        ),
    ] = None,
    strict: StrictOpt = False,
    assignments: SetOpt = None,
) -> None:
    """index -> extract+crop (one decode per frame) -> shard in one go; run it again to resume or
    to carry on after parts."""
    from ffx.pipeline.engine.parts import parse_part
    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.build import run_build

    recipe = load_manifest(manifest, {}, assignments)
    report = run_build(
        recipe,
        root,
        build,
        splits_dir=splits,
        part=parse_part(part),
        workers=workers,
        device=device,
        keep_frames=keep_frames,
        strict=strict,
        show_progress=console.is_terminal,
    )
    print_build_report(report)


def print_build_report(report) -> None:
    """Every stage's summary, then what the build waits for, if anything."""
    by_split = ", ".join(f"{name} {count}" for name, count in report.index.by_split.items())
    console.print(f"index: {report.index.videos} videos: {escape(by_split)}")
    for stage in report.stages:
        print_stage_report(stage)
    if report.waiting:
        console.print(
            f"[yellow]waiting:[/] other parts have not finished {report.waiting}; "
            "run the same command again once they have"
        )


@app.command()
def export(
    build: BuildArg,
    export_format: Annotated[
        str, typer.Option("--format", help="mcx-api (path label) | lib (label,folder,nframes) | imagefolder.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the lists or the image folders.")],
    copy: Annotated[
        bool, typer.Option("--copy", help="imagefolder, deepfakebench: copy crops instead of linking.")
    ] = False,
    dfb_root: Annotated[
        Path | None,
        typer.Option("--dfb-root", help="deepfakebench: the folder DeepfakeBench runs from (default: here)."),
    ] = None,
) -> None:
    """Datalists, image folders or a DeepfakeBench dataset JSON over the face crops."""
    from ffx.pipeline.stages.export import run_export

    report = run_export(build, export_format, out, copy=copy, dfb_root=dfb_root)
    per_split = ", ".join(f"{split} {count}" for split, count in sorted(report.crops.items()))
    console.print(f"export ({report.export_format}): {escape(per_split)} crops in {escape(str(report.out))}")
    if report.unlabelled:
        console.print(f"  [yellow]{report.unlabelled} crops of unlabelled videos left out[/]")
    for note in report.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    if report.config:
        console.print(f"DeepfakeBench config (also in {escape(str(report.out / 'deepfakebench.yaml'))}):")
        console.print(escape(report.config), highlight=False, end="")


@app.command(name="import-crops")
def import_crops(
    source: Annotated[Path, typer.Argument(help="Folder of face crops (for deepfakebench: paths' root).")],
    build: BuildOpt,
    source_format: Annotated[
        str, typer.Option("--format", help="folders ([split/]label/video/*.png) | deepfakebench.")
    ] = "folders",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="deepfakebench: the dataset JSON (under SOURCE).")
    ] = None,
    compression: Annotated[
        str, typer.Option("--compression", help="deepfakebench, FF++ family: raw | c23 | c40.")
    ] = "c23",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split where none is given.")] = 0,
) -> None:
    """Face crops made elsewhere as a build that starts at `ffx shard` (no video needed)."""
    from ffx.pipeline.stages.import_crops import run_import

    report = run_import(source, build, source_format, json_file, compression, seed=seed)
    rows = ", ".join(f"{status} {count}" for status, count in sorted(report.rows_by_status.items()))
    splits = ", ".join(f"{split} {count}" for split, count in report.index.by_split.items())
    console.print(
        f"import-crops: {report.videos} videos ({escape(splits)}); "
        f"images {escape(rows)}; {report.crops} crops in {escape(str(build))}/faces",
        highlight=False,
    )
    for note in report.index.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    for key, error in report.failed[:20]:
        console.print(f"  [red]{escape(key)}[/]: {escape(error)}", highlight=False)
    if len(report.failed) > 20:
        console.print(f"  … and {len(report.failed) - 20} more (see faces.parquet)")


@app.command()
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
        str | None, typer.Option("--backbone", help="Any timm model (legacy_xception).")
    ] = None,
    spaces: Annotated[
        str | None, typer.Option("--spaces", help="Colour spaces of the input, e.g. rgb,ycbcr.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option("--steps-per-epoch", min=1, help="Default: from index.json class counts.")
    ] = None,
    classes: Annotated[
        int | None, typer.Option("--classes", min=2, help="Number of classes (default: from index.json).")
    ] = None,
    classes_per_batch: Annotated[
        int | None, typer.Option("--classes-per-batch", min=1, help="P (3).")
    ] = None,
    images_per_class: Annotated[int | None, typer.Option("--images-per-class", min=1, help="K (9).")] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="SGD learning rate (0.01), cosine schedule.")
    ] = None,
    crop: Annotated[
        int | None, typer.Option("--crop", min=8, help="Training crop side (448; random, centred for eval).")
    ] = None,
    freeze_epochs: Annotated[
        int | None, typer.Option("--freeze-epochs", min=0, help="Epochs with a frozen backbone (8).")
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
        typer.Option("--flip/--no-flip", help="Mirror half of the training samples (default: on)."),
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
    seed: Annotated[int | None, typer.Option("--seed")] = None,
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
    from ffx.train.config import TrainConfig, given_settings
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

    def warn(text: str) -> None:  # one line on stderr, from rank 0 only
        error_console.print(f"[yellow]ffx: warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    report = run_training(
        settings,
        resume=resume,
        show_progress=True,  # a bar on a terminal's stderr, else a line every --log-every steps
        verify=verify,
        warn=warn,
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


@app.command(name="eval")
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
    split: Annotated[str, typer.Option("--split", help="train | val | test.")] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for metrics.json, predictions.parquet, roc.png, confusion.png "
            "(default: {checkpoint}.eval-{split}.json beside the checkpoint, metrics only).",
        ),
    ] = None,
    crop: Annotated[int | None, typer.Option("--crop", help="Centre crop side (default: the run's).")] = None,
    colour_on: Annotated[
        str | None,
        typer.Option(
            "--colour-on",
            help="device | host | auto: where the colour spaces are made (default: as the run did).",
        ),
    ] = None,
    workers: WorkersOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
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


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors file written by ffx train.")],
    inputs: Annotated[
        list[Path], typer.Argument(help="Videos, images, or folders of them (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for frames.csv, inputs.csv, predictions.json.")],
    threshold: Annotated[
        float, typer.Option("--threshold", help="A frame or input is `fake` at or above this score.")
    ] = 0.5,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    workers: WorkersOpt = None,
    keep_crops: Annotated[
        bool, typer.Option("--keep-crops", help="Keep the face crops in OUT/crops/{input}/.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Also a Grad-CAM sheet of each input (OUT/sheet-{input}.png)."),
    ] = False,
) -> None:
    """Score videos and images with a detector: a score per frame and per input, with the data
    settings the checkpoint was trained with (sampling, crop, spaces). Exits 1 only when no input
    could be read; an input without a face gets a row saying so."""
    from ffx.apply.explain import explain as run_explain
    from ffx.apply.predict import predict as run_predict

    if explain:
        explained = run_explain(
            checkpoint,
            out,
            inputs=inputs,
            methods=("gradcam",),
            device=device,
            threshold=threshold,
            workers=workers,
            show_progress=console.is_terminal,
        )
        report = explained.prediction
    else:
        report = run_predict(
            checkpoint,
            inputs,
            out,
            threshold=threshold,
            device=device,
            workers=workers,
            show_progress=console.is_terminal,
            crops_dir=out / "crops" if keep_crops else None,
        )
    print_predictions(report)
    if explain:
        for sheet in explained.sheets:
            console.print(f"attention maps: {escape(str(sheet))}", highlight=False)
    console.print(f"predictions in {escape(str(out))} (frames.csv, inputs.csv, predictions.json)")
    if not report.readable:
        raise FfxError(f"none of the {len(report.inputs)} inputs could be read (see the table)")


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors file written by ffx train.")],
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Videos or images to explain (instead of --shards).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sheets, overlays and t-SNE.")] = Path(
        "explain"
    ),
    shards: Annotated[
        Path | None, typer.Option("--shards", help="BUILD/shards: explain samples of a split.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train | val | test.")] = "test",
    per_class: Annotated[
        int, typer.Option("--per-class", min=1, help="Samples per class (per input with INPUTS).")
    ] = 8,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma list of gradcam, gradcam++, hirescam, layercam, xgradcam.")
    ] = "gradcam,gradcam++,hirescam,layercam,xgradcam",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
) -> None:
    """What a detector looks at: class activation maps of the backbone's last stage over the face
    crops (a contact sheet per class, overlays per method) and, with --shards, a t-SNE of the
    backbone features (tsne.png, features.parquet)."""
    from ffx.apply.explain import explain as run_explain

    report = run_explain(
        checkpoint,
        out,
        shards=shards,
        split=split,
        inputs=inputs or (),
        per_class=per_class,
        methods=methods,
        device=device,
        show_progress=console.is_terminal,
    )
    console.print(
        f"explain: {report.samples} samples, overlays in {escape(str(out / 'cam'))}", highlight=False
    )
    for path in [*report.sheets, report.tsne, report.features]:
        if path is not None:
            console.print(f"  {escape(str(path))}", highlight=False)


def print_predictions(report) -> None:
    """One row per input (its file name: the full paths are in the CSV files): its status, frames,
    faces scored, mean score, label and, where it has no score, why."""
    table = Table(title=escape(f"ffx predict: {report.checkpoint}"))
    for column in ("input", "status", "frames", "faces", "score", "label", "why"):
        table.add_column(column, justify="right" if column in ("frames", "faces", "score") else "left")
    names = Counter(Path(row["input"]).name for row in report.inputs)
    for row in report.inputs:
        name = Path(row["input"]).name
        table.add_row(
            escape(name if names[name] == 1 else row["input"]),  # the path where names repeat
            escape(row["status"]),
            str(row["frames"]),
            str(row["faces"]),
            _figure(row["score"]),
            row["label"] or "-",
            escape(row["error"]),
        )
    console.print(table)


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_eval(metrics: dict) -> None:
    """A rich table (a row per build, subset and level), the notes, and the summary line."""
    table = Table(title=escape(f"ffx eval {metrics['split']}: {metrics['checkpoint']}"))
    for name in ("dataset", "subset", "level", "real", "fake", "BOSC", "AUC", "ACC", "EER", "AP"):
        table.add_column(name, justify="left" if name in ("dataset", "subset", "level") else "right")
    sections = [
        row
        for name, values in metrics["datasets"].items()
        for row in [(name, "all", values["pooled"])]
        + [(name, f"real vs {method}", subset) for method, subset in values["methods"].items()]
    ]
    if len(metrics["datasets"]) > 1:
        sections.append(("all builds", "all", metrics["pooled"]))
    shown = None
    for dataset, subset, levels in sections:
        for level in ("frame", "video"):
            values = levels[level]
            table.add_row(
                escape(dataset) if dataset != shown else "",
                escape(subset) if level == "frame" else "",
                level,
                str(values["real"]),
                str(values["fake"]),
                *(_figure(values[key]) for key in ("bosc", "auc", "acc", "eer", "ap")),
            )
            shown = dataset
    if console.is_terminal:
        console.print(table)
    else:  # in a log the table is as wide as it needs: no name or figure is cut short
        needed = Measurement.get(console, console.options.update_width(1000), table).maximum
        Console(file=console.file, width=max(console.width, needed), emoji=False).print(table)
    for note in metrics["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    checkpoint, split = Path(metrics["checkpoint"]), metrics["split"]
    written = metrics.get("out") or str(checkpoint.with_name(f"{checkpoint.stem}.eval-{split}.json"))
    console.print(
        f"eval {escape(split)}: frames {metrics['frames']}, videos {metrics['videos']}; "
        f"frame BOSC {_figure(metrics['frame_bosc'])} AUC {_figure(metrics['frame_auc'])}; "
        f"video BOSC {_figure(metrics['video_bosc'])} AUC {_figure(metrics['video_auc'])}; "
        f"written to {escape(written)}",
        highlight=False,
    )


@app.command()
def verify(build: BuildArg) -> None:
    """Check every shard against BUILD/shards/index.json (sha256, size, samples); exit 1 on a mismatch."""
    from ffx.pipeline.stages.shard import verify_shards

    report = verify_shards(build)
    for problem in report.problems:
        console.print(f"[red]bad shard[/] {escape(problem)}", highlight=False)
    if report.problems:
        console.print(f"verify: {len(report.problems)} problems in {report.shards} shards")
        raise typer.Exit(1)
    console.print(f"verify: {report.shards} shards, {report.samples} samples, all match the index")


def print_stage_report(report) -> None:
    """One line of counts, the failed videos (at most 20), shards per split, and whether the
    table is merged. Every name from the build is escaped: rich markup in a file name stays text."""
    items = ", ".join(f"{status} {count}" for status, count in sorted(report.items_by_status.items()))
    rows = ", ".join(f"{status} {count}" for status, count in sorted(report.rows_by_status.items()))
    figures = "".join(f"; {count} {name}" for name, count in sorted(report.counts.items()))
    changed = f" ({report.redone} redone: their inputs or settings changed)" if report.redone else ""
    dropped = f"; {report.dropped} no longer indexed, removed" if report.dropped else ""
    console.print(
        f"{command_of(report.stage).split()[-1]}: {report.items} videos in this part, "
        f"{report.skipped} already current{changed}; "
        f"this run: videos {escape(items) or 'none'}; {report.unit} {escape(rows) or 'none'} "
        f"({report.outputs} {report.made}){figures} in {report.seconds:.1f} s{dropped}",
        highlight=False,
    )
    for key, status, error in report.failed[:20]:
        console.print(f"  [red]{escape(status)}[/] {escape(key)}: {escape(error)}", highlight=False)
    if len(report.failed) > 20:
        console.print(f"  … and {len(report.failed) - 20} more (see `ffx status`)")
    if not report.merged:
        console.print("  table not merged yet: other parts are still missing (run again when they finish)")
    index = report.extra.get("index")
    if index:
        for split, totals in index["splits"].items():
            shards, samples, megabytes = totals["shards"], totals["samples"], totals["bytes"] / 1e6
            console.print(f"  {escape(split)}: {shards} shards, {samples} samples, {megabytes:.1f} MB")


@app.command()
def status(build: BuildArg) -> None:
    """Show items per stage and status."""
    from ffx.pipeline.stages.status import build_status

    print_status(build_status(build), title=f"ffx build {build}")


@app.command()
def slurm(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sbatch scripts and submit.sh.")],
    splits: Annotated[
        Path | None,
        typer.Option("--splits", help="Folder with official split files (FF++ train/val/test.json)."),
    ] = None,
    assignments: SetOpt = None,
    tasks: Annotated[
        str, typer.Option("--tasks", help="Array tasks per stage: N, or extract=32,crop=8,shard=16.")
    ] = "1",
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Cores per stage task.")] = 4,
    mem: Annotated[str, typer.Option("--mem", help="Memory per stage task (Slurm's form: 8G).")] = "8G",
    time_limit: Annotated[
        str, typer.Option("--time", help="Time limit per stage task (HH:MM:SS or D-HH:MM:SS).")
    ] = "04:00:00",
    crop_gres: Annotated[
        str | None, typer.Option("--crop-gres", help="Generic resources of a crop task, e.g. gpu:1.")
    ] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Slurm account.")] = None,
    logs: Annotated[
        Path | None, typer.Option("--logs", help="Folder of the task logs (default: OUT/logs).")
    ] = None,
    setup: Annotated[
        str, typer.Option("--setup", help="Shell lines run first in every job, e.g. 'module load cuda'.")
    ] = "",
    requeue: Annotated[
        bool, typer.Option("--requeue/--no-requeue", help="Let Slurm requeue a task after a node failure.")
    ] = False,
    run: Annotated[
        Path | None, typer.Option("--run", help="Also train on the shards into this run folder.")
    ] = None,
    train_args: Annotated[
        str, typer.Option("--train-args", help="Options of `ffx train`, quoted as one string.")
    ] = "",
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Training nodes.")] = 1,
    procs_per_node: Annotated[
        int, typer.Option("--procs-per-node", min=1, help="Training processes per node (one per GPU).")
    ] = 1,
    train_cpus: Annotated[int, typer.Option("--train-cpus", min=1, help="Cores per training node.")] = 8,
    train_mem: Annotated[str, typer.Option("--train-mem", help="Memory per training node.")] = "32G",
    train_time: Annotated[str, typer.Option("--train-time", help="Time limit of training.")] = "24:00:00",
    train_gres: Annotated[
        str | None, typer.Option("--train-gres", help="Generic resources per training node, e.g. gpu:4.")
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Submit the jobs now (sbatch), each after the one before.")
    ] = False,
) -> None:
    """Write the sbatch scripts of a build (an array job per stage) and of training; --submit sends them."""
    import shlex

    from ffx.cluster.slurm import Resources, Training, parse_tasks, submit_jobs, write_slurm_jobs

    resources = Resources(cpus=cpus, mem=mem, time=time_limit)
    training = None
    if run is not None:
        training = Training(
            run=run,
            args=tuple(shlex.split(train_args)),
            nodes=nodes,
            procs_per_node=procs_per_node,
            resources=Resources(cpus=train_cpus, mem=train_mem, time=train_time, gres=train_gres),
        )
    jobs = write_slurm_jobs(
        manifest,
        root,
        build,
        out,
        splits=splits,
        assignments=assignments or (),
        tasks=parse_tasks(tasks),
        resources=resources,
        stage_resources={"crop": Resources(cpus=cpus, mem=mem, time=time_limit, gres=crop_gres)},
        training=training,
        partition=partition,
        account=account,
        logs=logs,
        setup=setup,
        requeue=requeue,
    )
    names = ", ".join(path.name for path in jobs.scripts.values())
    folder = escape(str(jobs.folder))
    console.print(f"slurm: wrote {names} and {jobs.submit.name} in {folder}", highlight=False)
    if not submit:
        console.print(f"  submit them with: bash {escape(str(jobs.submit))}", highlight=False)
        return
    ids = submit_jobs(jobs)
    console.print(
        "submitted: " + ", ".join(f"{name} {job_id}" for name, job_id in ids.items()), highlight=False
    )
    console.print(f"  logs: {escape(str(jobs.logs))}; `squeue --me` shows them", highlight=False)


@app.command()
def recipes() -> None:
    """List the checked-in recipes in manifests/."""
    from ffx.pipeline.recipe.manifest import load_manifest, recipe_names

    table = Table(title="recipes (use the name as MANIFEST)")
    table.add_column("name")
    table.add_column("layout")
    table.add_column("description")
    for name in recipe_names():
        recipe = load_manifest(name)
        table.add_row(escape(name), recipe.layout.kind, escape(recipe.description))
    console.print(table)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where the demo writes its data, build, run and evaluation.")
    ] = Path("ffx-demo"),
) -> None:
    """Generated clips end to end on the CPU (a minute or two): build the shards, train a small
    detector, evaluate it on the test split. A rerun reuses what is there; delete WORKDIR to start over."""
    from ffx.demo import DEMO_TRAINING, run_demo
    from ffx.pipeline.stages.status import build_status

    def built(report) -> None:  # before training starts
        console.print(f"demo data: {escape(str(report.data))}  build: {escape(str(report.build.build))}")
        print_build_report(report.build)
        print_status(build_status(report.build.build), title="demo build")
        if report.run is not None:
            console.print(
                f"demo detector: {DEMO_TRAINING['backbone']} from scratch on the CPU, "
                f"{DEMO_TRAINING['epochs']} epochs of {DEMO_TRAINING['crop']} px crops, in "
                f"{escape(str(report.run))}",
                highlight=False,
            )

    def warn(text: str) -> None:
        error_console.print(f"[yellow]ffx: warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    report = run_demo(workdir, show_progress=console.is_terminal, on_build=built, warn=warn)
    if report.run is None:
        return
    print_demo_report(report)


def print_demo_report(report) -> None:
    """The training line, the test split's table (as `ffx eval`) and where every output is."""
    trained = report.train
    if report.trained:
        figures = ", ".join(
            f"{name} {value:.4g}" for name, value in trained.metrics.items() if isinstance(value, float)
        )
        console.print(f"train: step {trained.step} of {trained.total_steps}; {figures}", highlight=False)
    else:
        console.print(
            f"train: the run had finished (step {trained.step} of {trained.total_steps}): not trained again",
            highlight=False,
        )
    if not report.evaluated:
        console.print("eval: metrics.json is newer than the checkpoint: shown as written", highlight=False)
    print_eval(report.metrics)
    print_predictions(report.prediction)
    console.print("demo outputs:")
    for name, path in (
        ("clips", report.data),
        ("build", report.build.build),
        ("shards", report.build.build / "shards"),
        ("run", report.run),
        ("checkpoint", report.checkpoint),
        ("evaluation", report.evaluation),
        ("ROC curve", report.evaluation / "roc.png"),
        ("predictions", report.prediction.out / "frames.csv"),
        *(("attention", sheet) for sheet in report.explanation.sheets),
        ("t-SNE", report.explanation.tsne),
    ):
        console.print(f"  {name + ':':<13}{escape(str(path))}", highlight=False)


def print_status(statuses, title: str) -> None:
    """A rich table: one row per stage and status, with videos and rows (frames, faces)."""
    table = Table(title=escape(title))
    table.add_column("stage")
    table.add_column("status / split")
    table.add_column("videos", justify="right")
    table.add_column("rows", justify="right")
    for stage in statuses:
        state = "" if stage.merged else " (in progress)"
        for position, (name, count) in enumerate(sorted(stage.items.items())):
            label = stage.stage + state if position == 0 else ""
            table.add_row(label, escape(name), str(count), str(stage.rows[name]))
        if len(stage.items) > 1:
            table.add_row("", "[bold]total", str(stage.videos), str(sum(stage.rows.values())))
        currency = stage.currency
        if currency is not None and not currency.ok:
            for what, count in (
                ("[yellow]stale[/] (inputs or settings changed)", currency.stale),
                ("[yellow]not done[/]", currency.missing),
                ("[yellow]no longer indexed[/]", currency.gone),
            ):
                if count:
                    table.add_row("", what, str(count), "")
            if currency.upstream:
                table.add_row("", "[yellow]waits for an upstream stage[/]", "", "")
    console.print(table)
    stale = [stage for stage in statuses if stage.currency is not None and not stage.currency.ok]
    if stale:
        console.print(
            f"[yellow]out of date:[/] {', '.join(stage.stage for stage in stale)}; each stage's command "
            "(ffx extract, crop, shard BUILD) brings them up to date, or "
            "`ffx build BUILD/manifest.toml --root ROOT --build BUILD` (the build's own recipe)"
        )
        reason = next((stage.currency.upstream for stage in stale if stage.currency.upstream), "")
        if reason:
            console.print(f"  why: {escape(reason)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one red line for an FfxError (traceback with FFX_DEBUG=1), exit code back."""
    command = typer.main.get_command(app)
    try:
        # Standalone mode prints usage errors the click way and exits with their code.
        command.main(args=argv, prog_name="ffx", standalone_mode=True)
    except (FfxError, OSError) as error:
        # The CLI's one error boundary: a problem the user must act on is one line (exit 1); a file
        # that could not be read or written is named with what to do about it.
        if os.environ.get("FFX_DEBUG") == "1":
            if isinstance(error, WorkerBug):
                error_console.print(error.worker_traceback, markup=False, highlight=False)
            raise
        message = str(error) if isinstance(error, FfxError) else os_error_line(error)
        error_console.print(f"[bold red]ffx: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return error.exit_code if isinstance(error, FfxError) else 1
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
