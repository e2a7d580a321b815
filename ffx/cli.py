"""The `ffx` command line: parses options and calls the library; nothing else lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ffx import __version__
from ffx.errors import FfxError
from ffx.pipeline.decode import DEFAULT_BACKENDS

app = typer.Typer(
    name="ffx",
    help="Reproducible face-forgery datasets: index, extract, crop, shard, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # long paths and errors stay on one line in logs
error_console = Console(stderr=True)

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
    from ffx.pipeline.index import run_index
    from ffx.pipeline.manifest import load_manifest

    recipe = load_manifest(manifest, {"sampling": sample, "seed": seed}, assignments)
    report = run_index(recipe, root, build, splits)
    console.print(f"indexed [bold]{report.videos}[/] videos into {report.table_path}")
    console.print("  by split: " + ", ".join(f"{k} {v}" for k, v in report.by_split.items()))
    console.print("  by label: " + ", ".join(f"{k} {v}" for k, v in report.by_label.items()))
    for note in report.notes:
        console.print(f"  [yellow]note:[/] {note}")


PartOpt = Annotated[
    str | None,
    typer.Option("--part", help="Do part i of n (e.g. 0/4); default: SLURM_ARRAY_TASK_ID/COUNT, else all."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, help="Worker processes (default: all cores).")
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
            help="first:N | stride:S:O[:MAX] | linspace:N | all (default: the manifest's, first:30).",
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option("--backend", help="Decoders to try in order, comma-separated (pyav,decord,opencv)."),
    ] = ",".join(DEFAULT_BACKENDS),
    png_level: Annotated[int, typer.Option("--png-level", help="PNG zlib level 0-9 (lossless at any).")] = 1,
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
    fail_on_error: Annotated[
        bool, typer.Option("--fail-on-error", help="Exit 1 if any video failed (anything but ok or short).")
    ] = False,
) -> None:
    """Decode the sampled frames of every video into BUILD/frames/ (PNG) and frames.parquet."""
    from ffx.pipeline.distribute import parse_part
    from ffx.pipeline.extract import run_extract

    report = run_extract(
        build,
        part=parse_part(part),
        workers=workers,
        sampling=sample,
        backends=tuple(name.strip() for name in backend.split(",") if name.strip()),
        png_level=png_level,
        stall_seconds=timeout,
        root=root,
        retry_failed=retry_failed,
        show_progress=console.is_terminal,
    )
    print_stage_report("extract", report)
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
        str | None, typer.Option("--preset", help="mcx-api | square-1.3 (default: the recipe's crop.preset).")
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", min=16, help="Output side in pixels (default: the recipe's).")
    ] = None,
    scale: Annotated[float, typer.Option("--scale", help="square-1.3: box side / longer face side.")] = 1.3,
    min_prob: Annotated[
        float | None,
        typer.Option("--min-prob", help="Least MTCNN probability of a face (recipe default 0.99)."),
    ] = None,
    detect_max_side: Annotated[
        int, typer.Option("--detect-max-side", min=32, help="Detect on a copy with at most this long side.")
    ] = 640,
    min_face_ratio: Annotated[
        float,
        typer.Option(
            "--min-face-ratio", help="Skip faces smaller than this share of frame 0's largest (0: none)."
        ),
    ] = 0.5,
    all_faces: Annotated[
        bool, typer.Option("--all-faces", help="Keep every face track, not only the main one.")
    ] = False,
    boxes_from_original: Annotated[
        bool,
        typer.Option("--boxes-from-original", help="Fakes reuse their original video's boxes (FF++, DFDC)."),
    ] = False,
) -> None:
    """Detect faces (MTCNN) in BUILD's frames and write crops to BUILD/faces/ plus faces.parquet."""
    from ffx.pipeline.crop import crop_settings_for, run_crop
    from ffx.pipeline.distribute import parse_part

    settings = crop_settings_for(
        build,
        preset=preset,
        size=size,
        scale=scale,
        min_prob=min_prob,
        detect_max_side=detect_max_side,
        min_face_ratio=min_face_ratio,
        all_faces=all_faces,
        boxes_from_original=boxes_from_original,
    )
    report = run_crop(
        build,
        settings=settings,
        part=parse_part(part),
        device=device,
        workers=workers,
        batch_size=batch_size,
        show_progress=console.is_terminal,
    )
    print_crop_report(report)


@app.command()
def qa(
    build: BuildArg,
    videos: Annotated[int, typer.Option("--videos", min=1, help="How many videos get a contact sheet.")] = 24,
) -> None:
    """Contact sheets of the crops (BUILD/qa/*.png), the most faceless videos first."""
    from ffx.pipeline.qa import write_qa

    report = write_qa(build, videos=videos)
    console.print(f"qa: {len(report.sheets)} contact sheets in {report.folder}; every video in worst.tsv")
    for key, missing, frames in report.worst[:10]:
        if missing:
            console.print(f"  {key}: {missing} of {frames} frames without a face")


@app.command()
def shard(
    build: BuildArg,
    part: PartOpt = None,
    workers: WorkersOpt = None,
    spaces: Annotated[
        str | None,
        typer.Option(
            "--spaces", help="Colour spaces per sample, e.g. rgb,lab,hsv,ycbcr (default: the recipe's)."
        ),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option("--shard-size", min=1, help="Most samples per shard (default: the recipe's)."),
    ] = None,
    shard_bytes: Annotated[
        int | None, typer.Option("--shard-bytes", min=1, help="Most bytes per shard (default: the recipe's).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the sample order (default: the recipe's).")
    ] = None,
    png_level: Annotated[
        int, typer.Option("--png-level", help="PNG zlib level 0-9 of the converted spaces.")
    ] = 1,
    strict: StrictOpt = False,
) -> None:
    """Pack every crop, in each colour space, into WebDataset shards: BUILD/shards/{split}-NNNNNN.tar."""
    from ffx.pipeline.distribute import parse_part
    from ffx.pipeline.shard import run_shard, shard_settings_for

    settings = shard_settings_for(
        build, spaces=spaces, max_count=shard_size, max_bytes=shard_bytes, seed=seed, png_level=png_level
    )
    report = run_shard(
        build,
        settings=settings,
        part=parse_part(part),
        workers=workers,
        strict=strict,
        show_progress=console.is_terminal,
    )
    print_shard_report(report, build)


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
    strict: StrictOpt = False,
    assignments: SetOpt = None,
) -> None:
    """index -> extract -> crop -> shard in one go; run it again to resume or to carry on after parts."""
    from ffx.pipeline.build import run_build
    from ffx.pipeline.distribute import parse_part
    from ffx.pipeline.manifest import load_manifest

    recipe = load_manifest(manifest, {}, assignments)
    report = run_build(
        recipe,
        root,
        build,
        splits_dir=splits,
        part=parse_part(part),
        workers=workers,
        device=device,
        strict=strict,
        show_progress=console.is_terminal,
    )
    print_build_report(report)


def print_build_report(report) -> None:
    """Every stage's summary, then what the build waits for, if anything."""
    by_split = ", ".join(f"{name} {count}" for name, count in report.index.by_split.items())
    console.print(f"index: {report.index.videos} videos: {by_split}")
    if report.extract:
        print_stage_report("extract", report.extract)
    if report.crop:
        print_crop_report(report.crop)
    if report.shard:
        print_shard_report(report.shard, report.build)
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
    copy: Annotated[bool, typer.Option("--copy", help="imagefolder: copy crops instead of linking.")] = False,
) -> None:
    """Datalists or image folders over the face crops, for the public MCX-API and LIB code."""
    from ffx.pipeline.export import run_export

    report = run_export(build, export_format, out, copy=copy)
    per_split = ", ".join(f"{split} {count}" for split, count in sorted(report.crops.items()))
    console.print(f"export ({report.export_format}): {per_split} crops in {report.out}")
    if report.unlabelled:
        console.print(f"  [yellow]{report.unlabelled} crops of unlabelled videos left out[/]")


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
        Path | None, typer.Option("--pretrained", help="A local timm checkpoint of the RGB backbone.")
    ] = None,
    workers: WorkersOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps (resume later).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --run where it stopped.")
    ] = False,
) -> None:
    """Train MCX-API on shards (torchrun for several GPUs or processes); resumable."""
    from ffx.train.loop import make_config
    from ffx.train.loop import train as run_training

    settings = make_config(
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
        workers=workers,
        device=device,
        seed=seed,
        max_steps=max_steps,
    )
    report = run_training(settings, resume=resume, show_progress=console.is_terminal)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the job
        return
    metrics = ", ".join(
        f"{name} {value:.4g}" for name, value in report.metrics.items() if isinstance(value, float)
    )
    console.print(f"train: step {report.step} of {report.total_steps} in {report.run}; {metrics}")


@app.command(name="eval")
def evaluate(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="A .safetensors file written by ffx train.")
    ],
    shards: Annotated[str, typer.Option("--shards", help="BUILD/shards of the data to score.")],
    split: Annotated[str, typer.Option("--split", help="train | val | test.")] = "test",
    crop: Annotated[int | None, typer.Option("--crop", help="Centre crop side (default: the run's).")] = None,
    workers: WorkersOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Frame- and video-level BOSC and AUC of a checkpoint on a split; JSON beside the checkpoint."""
    from ffx.train.loop import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, shards, split, crop=crop, workers=workers, device=device)
    console.print(
        f"eval {split}: frames {metrics['frames']}, videos {metrics['videos']}; "
        f"frame BOSC {metrics['frame_bosc']:.4f} AUC {metrics['frame_auc']:.4f}; "
        f"video BOSC {metrics['video_bosc']:.4f} AUC {metrics['video_auc']:.4f}"
    )


@app.command()
def verify(build: BuildArg) -> None:
    """Check every shard against BUILD/shards/index.json (sha256, size, samples); exit 1 on a mismatch."""
    from ffx.pipeline.shard import verify_shards

    report = verify_shards(build)
    for problem in report.problems:
        console.print(f"[red]bad shard[/] {problem}", highlight=False)
    if report.problems:
        console.print(f"verify: {len(report.problems)} problems in {report.shards} shards")
        raise typer.Exit(1)
    console.print(f"verify: {report.shards} shards, {report.samples} samples, all match the index")


def print_shard_report(report, build: Path) -> None:
    """Samples per status, videos without any sample, and the shards per split."""
    counts = (
        ", ".join(f"{status} {count}" for status, count in sorted(report.samples.items())) or "nothing to do"
    )
    console.print(
        f"shard: {report.videos} videos in this part, {report.skipped} already done; "
        f"this run: samples {counts} in {report.seconds:.1f} s"
    )
    for key, status, error in report.failed[:20]:
        console.print(f"  [yellow]{status}[/] {key}: {error}", highlight=False)
    if not report.merged:
        console.print("  shards not written yet: other parts are still missing (run again when they finish)")
        return
    for split, totals in report.splits.items():
        shards, samples, megabytes = totals["shards"], totals["samples"], totals["bytes"] / 1e6
        console.print(f"  {split}: {shards} shards, {samples} samples, {megabytes:.1f} MB")
    console.print(f"  {report.shards_written} shards written now; index: {build / 'shards' / 'index.json'}")


def print_crop_report(report) -> None:
    """Counts per frame status, detections saved, and the videos without any face."""
    counts = (
        ", ".join(f"{status} {count}" for status, count in sorted(report.frames.items())) or "nothing to do"
    )
    console.print(
        f"crop: {report.videos} videos in this part, {report.skipped} already done; "
        f"this run: frames {counts}; {report.faces} crops, {report.detected_frames} frames detected, "
        f"{report.reused_frames} boxes reused in {report.seconds:.1f} s"
    )
    for key, status, error in report.failed[:20]:
        console.print(f"  [yellow]{status} upstream[/] {key}: {error}", highlight=False)
    if report.videos_without_faces:
        shown = ", ".join(report.videos_without_faces[:20])
        more = (
            f" and {len(report.videos_without_faces) - 20} more"
            if len(report.videos_without_faces) > 20
            else ""
        )
        console.print(f"  [red]{len(report.videos_without_faces)} videos without any face:[/] {shown}{more}")
    if not report.merged:
        console.print("  table not merged yet: other parts are still missing (run again when they finish)")


def print_stage_report(stage: str, report) -> None:
    """One line of counts, the failed items (at most 20), and whether the table is merged."""
    rate = report.videos_done / report.seconds if report.seconds else 0.0
    counts = (
        ", ".join(f"{status} {count}" for status, count in sorted(report.by_status.items()))
        or "nothing to do"
    )
    console.print(
        f"{stage}: {report.videos} videos in this part, {report.skipped} already done; "
        f"this run: {counts}; {report.frames} frames in {report.seconds:.1f} s ({rate:.1f} videos/s)"
    )
    for key, status, error in report.failed[:20]:
        console.print(f"  [red]{status}[/] {key}: {error}", highlight=False)
    if len(report.failed) > 20:
        console.print(f"  … and {len(report.failed) - 20} more (see `ffx status`)")
    if not report.merged:
        console.print("  table not merged yet: other parts are still missing (run again when they finish)")


@app.command()
def status(build: BuildArg) -> None:
    """Show items per stage and status."""
    from ffx.pipeline.status import build_status

    print_status(build_status(build), title=f"ffx build {build}")


@app.command()
def recipes() -> None:
    """List the checked-in recipes in manifests/."""
    from ffx.pipeline.manifest import load_manifest, recipe_names

    table = Table(title="recipes (use the name as MANIFEST)")
    table.add_column("name")
    table.add_column("layout")
    table.add_column("description")
    for name in recipe_names():
        recipe = load_manifest(name)
        table.add_row(name, recipe.layout.kind, recipe.description)
    console.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo writes data and build.")] = Path(
        "ffx-demo"
    ),
) -> None:
    """Run the pipeline on generated clips (CPU, seconds) and show the build status."""
    from ffx.demo import run_demo
    from ffx.pipeline.status import build_status

    report = run_demo(workdir, show_progress=console.is_terminal)
    console.print(f"demo data: {report.data}  build: {report.build.build}")
    print_build_report(report.build)
    print_status(build_status(report.build.build), title="demo build")


def print_status(statuses, title: str) -> None:
    """A rich table: one row per stage and status, with videos and rows (frames, faces)."""
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("status / split")
    table.add_column("videos", justify="right")
    table.add_column("rows", justify="right")
    for stage in statuses:
        state = "" if stage.merged else " (in progress)"
        for position, (name, count) in enumerate(sorted(stage.items.items())):
            label = stage.stage + state if position == 0 else ""
            table.add_row(label, name, str(count), str(stage.rows[name]))
        if len(stage.items) > 1:
            table.add_row("", "[bold]total", str(stage.videos), str(sum(stage.rows.values())))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one red line for an FfxError (traceback with FFX_DEBUG=1), exit code back."""
    command = typer.main.get_command(app)
    try:
        # Standalone mode prints usage errors the click way and exits with their code.
        command.main(args=argv, prog_name="ffx", standalone_mode=True)
    except FfxError as error:
        if os.environ.get("FFX_DEBUG") == "1":
            raise
        error_console.print(f"[bold red]ffx: error:[/] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
