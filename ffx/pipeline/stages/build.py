"""`ffx build`: index -> extract -> crop -> shard in one call, resumable at any point, then build.json.

The steps are the registered stages in pipeline order (`ffx.pipeline.engine.registry`), each run
as its `Stage.build_step` says. Extract and crop share one pass: each worker decodes a video's
frames, hashes them, crops their faces and writes the crops; full-frame PNGs only with
`extract.keep_frames`.

Each stage redoes only what is not current, so running the same build again after a crash (or
after videos were added or removed) finishes only what is missing. With parts, a stage can only
start once every part finished the one before: a part that gets there first stops with
`waiting` set, and the same command, run again when the other parts are done, carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import stage_class, stage_names
from ffx.pipeline.engine.stage import BuildOptions, StageReport
from ffx.pipeline.recipe.manifest import Manifest
from ffx.pipeline.stages.index import IndexReport, run_index
from ffx.pipeline.stages.record import write_build_record


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
    build = Path(build)
    report = BuildReport(build, run_index(manifest, root, build, splits_dir))
    options = BuildOptions(part or Part(), workers, device, keep_frames, show_progress)
    for name in stage_names():  # the registered stages, in pipeline order
        stage = stage_class(name)
        step = stage.build_step(build, options)
        report.stages.append(step)
        if not step.merged:
            report.waiting = stage.command.split()[-1]
            return report
    write_build_record(build, strict=strict)
    return report
