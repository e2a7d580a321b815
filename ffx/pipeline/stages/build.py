"""`ffx build`: index -> extract -> crop -> shard in one call, resumable at any point, then build.json.

Extract and crop share one pass: each worker decodes a video's frames, hashes them, crops their
faces and writes the crops; full-frame PNGs only with `extract.keep_frames`.

Each stage redoes only what is not current, so running the same build again after a crash (or
after videos were added or removed) finishes only what is missing. With parts, a stage can only
start once every part finished the one before: a part that gets there first stops with
`waiting` set, and the same command, run again when the other parts are done, carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.stage import StageReport
from ffx.pipeline.recipe.manifest import Manifest
from ffx.pipeline.stages.crop import CropStage, run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import IndexReport, run_index
from ffx.pipeline.stages.record import write_build_record
from ffx.pipeline.stages.shard import run_shard


@dataclass
class BuildReport:
    """The report of every stage that ran; `waiting` names the stage other parts must finish."""

    build: Path
    index: IndexReport
    stages: list[StageReport] = field(default_factory=list)
    waiting: str = ""


def run_build(
    manifest: Manifest,
    root: Path,
    build: Path,
    *,
    splits_dir: Path | None = None,
    part: Part | None = None,
    workers: int | None = None,
    device: str = "auto",
    keep_frames: bool | None = None,
    strict: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Run every stage of `manifest` over the videos under `root` into `build`; the settings are
    the recipe's (BUILD/manifest.toml once indexed). `keep_frames` sets `extract.keep_frames`;
    None: the recipe's, or false where the recipe leaves it unset (frames decoded, hashed and
    cropped in one pass, never stored)."""
    build, part = Path(build), part or Part()
    report = BuildReport(build, run_index(manifest, root, build, splits_dir))
    # One decode per frame: the extract workers crop the faces of the frames they decode, so the
    # crop step finds them current (it does only what that pass could not: a fake whose original
    # was done in an earlier run, a video whose worker hung while cropping).
    crop = CropStage(device)
    steps = (
        (
            "extract",
            lambda: run_extract(
                build,
                part=part,
                workers=workers,
                keep_frames=keep_frames,
                crop=crop,
                stall_seconds=120.0,  # a first detection loads torch (and CUDA)
                show_progress=show_progress,
            ),
        ),
        (
            "crop",
            lambda: run_crop(build, part=part, device=device, workers=workers, show_progress=show_progress),
        ),
        ("shard", lambda: run_shard(build, part=part, workers=workers, show_progress=show_progress)),
    )
    for name, step in steps:
        stage = step()
        report.stages.append(stage)
        if not stage.merged:
            report.waiting = name
            return report
    write_build_record(build, strict=strict)
    return report
