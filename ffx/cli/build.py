"""The build commands: index, extract, crop, qa, shard, build, verify, status, recipes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ffx.cli.common import (
    BuildArg,
    BuildOpt,
    FailOpt,
    ManifestArg,
    MovedRootOpt,
    PartOpt,
    RootOpt,
    SetOpt,
    SplitsOpt,
    StrictOpt,
    TimeoutOpt,
    WorkersOpt,
    console,
)
from ffx.cli.reports import print_build_report, print_stage_report, print_status
from ffx.errors import FfxError
from ffx.pipeline.recipe import defaults

if TYPE_CHECKING:
    from ffx.pipeline.engine.stage import StageReport


def index(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    splits: SplitsOpt = None,
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
                f"truncated) | all; sets the recipe's `sampling` ({defaults.SAMPLING})."
            ),
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Decoders to try in order, comma-separated; sets `extract.backends` "
            f"({','.join(defaults.EXTRACT_BACKENDS)}).",
        ),
    ] = None,
    png_level: Annotated[
        int | None,
        typer.Option(
            "--png-level",
            min=0,
            max=9,
            help=f"PNG level, 0-9; sets `extract.png_level` ({defaults.EXTRACT_PNG_LEVEL}).",
        ),
    ] = None,
    keep_frames: Annotated[
        bool | None,
        typer.Option(
            "--keep-frames/--no-keep-frames",
            help="Store every frame as a PNG, or only its row and pixel hash; sets `extract.keep_frames` "
            "(true, except in a build made by `ffx build`).",
        ),
    ] = None,
    timeout: TimeoutOpt = 60.0,
    root: MovedRootOpt = None,
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
    finish_stage(report, fail_on_error)


def crop(
    build: BuildArg,
    part: PartOpt = None,
    root: MovedRootOpt = None,
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
        int | None, typer.Option("--size", min=32, max=2048, help="Output side in pixels; sets `crop.size`.")
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
        int | None,
        typer.Option(
            "--png-level",
            min=0,
            max=9,
            help="PNG level, 0-9; sets `crop.png_level`.",
        ),
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
        root=root,
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
    finish_stage(report, fail_on_error)


def finish_stage(report: StageReport, fail_on_error: bool) -> None:
    """A stage command's report, then exit 1 where --fail-on-error asks and a video failed."""
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
            help="PNG level of the converted spaces, 0-9; sets `shard.png_level`.",
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
    detector_outputs: Annotated[
        bool | None,
        typer.Option(
            "--detector-outputs/--no-detector-outputs",
            help="Also put the detector's floats (box, probability, landmarks) in each sample's JSON; "
            "they differ between CPU kernels, so shards then differ across machines. Sets "
            "`shard.detector_outputs`.",
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
        detector_outputs=detector_outputs,
    )
    if report.merged:
        write_build_record(build, strict=strict)
    finish_stage(report, fail_on_error)


def build(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    splits: SplitsOpt = None,
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


def verify(build: BuildArg) -> None:
    """Check every shard against BUILD/shards/index.json (sha256, size, samples); exit 1 on a mismatch."""
    from ffx.pipeline.stages.verify import verify_shards

    report = verify_shards(build)
    for problem in report.problems:
        console.print(f"[red]bad shard[/] {escape(problem)}", highlight=False)
    if report.problems:
        console.print(f"verify: {len(report.problems)} problems in {report.shards} shards")
        raise typer.Exit(1)
    console.print(f"verify: {report.shards} shards, {report.samples} samples, all match the index")


def status(build: BuildArg) -> None:
    """Show items per stage and status."""
    from ffx.pipeline.stages.status import build_status, video_root_note

    print_status(build_status(build), title=f"ffx build {build}")
    if note := video_root_note(build):
        console.print(f"note: {escape(note)}")


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
