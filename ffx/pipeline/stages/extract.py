"""`ffx extract`: the sampled frames of every indexed video as lossless PNGs plus frames.parquet.

Each video is one task in a worker process (`ffx.pipeline.stages.extract_worker`). The worker decodes
with the first backend of the chain (PyAV, then decord, then OpenCV) and falls back to the next
when a backend fails or gets fewer frames than the file holds; the main process replaces a
worker that hangs or crashes and retries the video with the remaining backends. Frames are
written into a temporary folder that is renamed to `frames/{key}/` when the video is done, so no
half-written PNG ever carries a final name, and the video's rows reach the ledger only after
that rename. The engine (`ffx.pipeline.engine.stage`) runs the stage.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from ffx.errors import InputError
from ffx.pipeline.engine import publish
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.stage import (
    Plan,
    Stage,
    StageReport,
    current_table,
    digest,
    run_stage,
)
from ffx.pipeline.engine.statuses import FAILED, Status
from ffx.pipeline.engine.workers import Stalled, available_cores
from ffx.pipeline.recipe.manifest import Manifest
from ffx.pipeline.recipe.schema import FRAMES_SCHEMA
from ffx.pipeline.stages.extract_worker import VideoTask, extract_video, rows_without_frames


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:  # missing or unreadable: the worker reports it
        return 0


class ExtractStage(Stage):
    """Videos -> frames: what a video's frames are made from is its file and the decode settings."""

    name, unit = "frames", "frames"
    schema, sort_by = FRAMES_SCHEMA, ("key", "frame_index")

    def __init__(self, root: Path | None = None):
        self.root = root  # where the videos are now, if they moved since `ffx index`
        self.path_of: dict[str, str] = {}  # set by plan(): each video's path below the root

    @staticmethod
    def settings(recipe: Manifest) -> dict:
        return {
            "sampling": recipe.sampling,
            "backends": list(recipe.extract.backends),
            "png_level": recipe.extract.png_level,
        }

    def plan(self, build: BuildDir, recipe: Manifest) -> Plan:
        videos = current_table(build, "videos").select(["key", "path", "size_bytes", "resolved"]).to_pylist()
        self.path_of = {video["key"]: video["path"] for video in videos}
        settings = self.settings(recipe)
        return Plan(
            {
                video["key"]: digest(settings, video["path"], video["size_bytes"], video["resolved"])
                for video in videos
            }
        )

    def tasks(self, build: BuildDir, recipe: Manifest, keys: list[str], done: pa.Table, workers: int) -> list:
        root = self._root(build)
        if not root.is_dir():
            raise InputError(f"dataset root not found: {root} (pass --root where the videos are now)")
        path_of = self.path_of
        settings = self.settings(recipe)
        threads = max(1, available_cores() // workers)
        build.frames.mkdir(parents=True, exist_ok=True)
        tasks = [
            VideoTask(
                key,
                str(Path(root) / path_of[key]),
                str(build.frames),
                settings["sampling"],
                tuple(settings["backends"]),
                settings["png_level"],
                threads,
            )
            for key in keys
        ]
        # Largest files first (a rough measure of the work), so the last tasks to run are short
        # ones and no core idles at the end while one long video finishes.
        return sorted(tasks, key=lambda task: -_file_size(task.source))

    worker = staticmethod(extract_video)

    def failure_rows(self, key: str, status: Status, error: str) -> list[dict]:
        return rows_without_frames(key, status, error)

    def stalled_rows(self, task: VideoTask, stalled: Stalled) -> list[dict]:
        publish.remove_item_temps(Path(task.frames_root), task.key)
        where = f"{stalled.last_report[0]}: " if stalled.last_report else "probing: "
        failures = (*task.failures, where + stalled.reason)
        status = Status.TIMEOUT if task.hung or stalled.hung else Status.DECODE_ERROR
        return rows_without_frames(task.key, status, "; ".join(failures))

    def retry(self, task: VideoTask, stalled: Stalled) -> VideoTask | None:
        """Retry a video whose worker hung or died with the backends after the one that did it."""
        if stalled.last_report is None:  # stuck before any backend started: probing will hang again
            return None
        backend = stalled.last_report[0]
        remaining = task.backends[task.backends.index(backend) + 1 :]
        failures = (*task.failures, f"{backend}: {stalled.reason}")
        hung = task.hung or stalled.hung
        return replace(task, backends=remaining, failures=failures, hung=hung) if remaining else None

    def inputs_present(self, build: BuildDir, key: str) -> bool:
        return (self._root(build) / self.path_of[key]).is_file()

    def _root(self, build: BuildDir) -> Path:
        return Path(self.root or json.loads(build.index.read_text(encoding="utf-8"))["root"])

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        shutil.rmtree(build.frames / key, ignore_errors=True)


def run_extract(
    build: Path,
    *,
    part: Part | None = None,
    workers: int | None = None,
    sampling: str | None = None,
    backends: tuple[str, ...] | None = None,
    png_level: int | None = None,
    stall_seconds: float = 60.0,
    root: Path | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
) -> StageReport:
    """Extract this part's videos that are not current, then merge frames.parquet once all parts
    are. `sampling`, `backends` and `png_level` change the build's recipe (and so redo every video).

    Finished videos reach the ledger at least every `flush_seconds`; a crash redoes only the
    videos finished since the last flush (and those in flight)."""
    options = {
        "sampling": sampling,
        "extract.backends": list(backends) if backends is not None else None,
        "extract.png_level": png_level,
    }
    return run_stage(
        ExtractStage(Path(root) if root else None),
        build,
        part=part,
        workers=workers,
        stall_seconds=stall_seconds,
        retry_statuses=[status.value for status in FAILED] if retry_failed else (),
        options=options,
        show_progress=show_progress,
        flush_seconds=flush_seconds,
    )
