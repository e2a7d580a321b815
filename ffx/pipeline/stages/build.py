"""`ffx build`: index -> extract -> crop -> shard in one call, resumable at any point, then build.json.

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
from ffx.pipeline.stages.crop import run_crop
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
    strict: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Run every stage of `manifest` over the videos under `root` into `build`; the settings are
    the recipe's (BUILD/manifest.toml once indexed)."""
    build, part = Path(build), part or Part()
    report = BuildReport(build, run_index(manifest, root, build, splits_dir))
    steps = (
        ("extract", lambda: run_extract(build, part=part, workers=workers, show_progress=show_progress)),
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
