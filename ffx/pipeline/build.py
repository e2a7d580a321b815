"""`ffx build`: index -> extract -> crop -> shard in one call, resumable at any point.

Each stage skips what is already done, so running the same build again after a crash (or after
more videos arrived) finishes only what is missing. With parts, a stage can only start once
every part finished the one before: a part that gets there first stops with `waiting` set,
and the same command, run again when the other parts are done, carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffx.pipeline.crop import CropReport, crop_settings_for, run_crop
from ffx.pipeline.distribute import Part
from ffx.pipeline.extract import ExtractReport, run_extract
from ffx.pipeline.index import IndexReport, run_index
from ffx.pipeline.manifest import Manifest
from ffx.pipeline.shard import ShardReport, run_shard, shard_settings_for


@dataclass
class BuildReport:
    """The report of every stage that ran; `waiting` names the stage other parts must finish."""

    build: Path
    index: IndexReport
    extract: ExtractReport | None = None
    crop: CropReport | None = None
    shard: ShardReport | None = None
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
    strict: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Run every stage of `manifest` over the videos under `root` into `build`."""
    build, part = Path(build), part or Part()
    report = BuildReport(build, run_index(manifest, root, build, splits_dir))
    report.extract = run_extract(build, part=part, workers=workers, show_progress=show_progress)
    if not report.extract.merged:
        report.waiting = "extract"
        return report
    report.crop = run_crop(
        build,
        settings=crop_settings_for(build),
        part=part,
        device=device,
        workers=workers,
        show_progress=show_progress,
    )
    if not report.crop.merged:
        report.waiting = "crop"
        return report
    report.shard = run_shard(
        build,
        settings=shard_settings_for(build),
        part=part,
        workers=workers,
        strict=strict,
        show_progress=show_progress,
    )
    if not report.shard.merged:
        report.waiting = "shard"
    return report
