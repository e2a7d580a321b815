"""`ffx extract`: the sampled frames of every indexed video as lossless PNGs plus frames.parquet.

Each video is one task in a worker process (`ffx.pipeline.extract_worker`). The worker decodes
with the first backend of the chain (PyAV, then decord, then OpenCV) and falls back to the next
when a backend fails or gets fewer frames than the file holds; the main process replaces a
worker that hangs or crashes and retries the video with the remaining backends. Frames are
written into a temporary folder that is renamed to `frames/{key}/` when the video is done, so no
half-written PNG ever carries a final name, and the video's rows reach the ledger only after
that rename.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ffx.errors import FfxError, InputError
from ffx.pipeline import publish, store
from ffx.pipeline.decode import BACKENDS, DEFAULT_BACKENDS
from ffx.pipeline.distribute import Part
from ffx.pipeline.extract_worker import FRAMES_DIR, VideoTask, extract_video, rows_without_frames
from ffx.pipeline.index import INDEX_FILE, MANIFEST_FILE, VIDEOS_TABLE
from ffx.pipeline.manifest import load_manifest
from ffx.pipeline.progress import stage_progress
from ffx.pipeline.sampling import parse_sampling
from ffx.pipeline.schema import FRAMES_SCHEMA
from ffx.pipeline.statuses import Status
from ffx.pipeline.workers import Stalled, available_cores, run_tasks

STAGE = "frames"
FAILED = (Status.PARTIAL, Status.DECODE_ERROR, Status.TIMEOUT, Status.MISSING, Status.ERROR)


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:  # missing or unreadable: the worker reports it
        return 0


def _retry_after_stall(task: VideoTask, stalled: Stalled) -> VideoTask | None:
    """Retry a video whose worker hung or died with the backends after the one that did it."""
    if stalled.last_report is None:  # stuck before any backend started: probing will hang again
        return None
    backend = stalled.last_report[0]
    remaining = task.backends[task.backends.index(backend) + 1 :]
    failures = (*task.failures, f"{backend}: {stalled.reason}")
    hung = task.hung or stalled.hung
    return replace(task, backends=remaining, failures=failures, hung=hung) if remaining else None


def _stalled_rows(task: VideoTask, stalled: Stalled) -> list[dict]:
    publish.remove_item_temps(Path(task.frames_root), task.key)
    where = f"{stalled.last_report[0]}: " if stalled.last_report else "probing: "
    failures = (*task.failures, where + stalled.reason)
    status = Status.TIMEOUT if task.hung or stalled.hung else Status.DECODE_ERROR
    return rows_without_frames(task, status, "; ".join(failures))


@dataclass
class ExtractReport:
    """What one `ffx extract` run did."""

    videos: int  # in this part
    skipped: int  # already done before this run
    by_status: dict[str, int]  # videos processed in this run, per status
    frames: int
    seconds: float
    merged: bool  # whether frames.parquet now holds every video of the build
    failed: list[tuple[str, str, str]]  # (key, status, error) of failed videos in this run

    @property
    def videos_done(self) -> int:
        """Videos processed by this run."""
        return sum(self.by_status.values())


def run_extract(
    build: Path,
    *,
    part: Part | None = None,
    workers: int | None = None,
    sampling: str | None = None,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
    png_level: int = 1,
    stall_seconds: float = 60.0,
    root: Path | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
) -> ExtractReport:
    """Extract this part's unfinished videos, then merge frames.parquet once all parts are done.

    Finished videos reach the ledger at least every `flush_seconds`; a crash redoes only the
    videos finished since the last flush (and those in flight)."""
    build, part = Path(build), part or Part()
    videos = store.read_table(build / VIDEOS_TABLE, "`ffx index`").select(["key", "path"])
    sampling = sampling or load_manifest(build / MANIFEST_FILE).sampling
    parse_sampling(sampling)
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown or not backends:
        raise FfxError(f"unknown backend {', '.join(unknown)!r}; choose from {', '.join(BACKENDS)}")
    if not 0 <= png_level <= 9:
        raise FfxError(f"--png-level must be 0..9, got {png_level}")
    root = Path(root) if root else Path(json.loads((build / INDEX_FILE).read_text(encoding="utf-8"))["root"])
    if not root.is_dir():
        raise InputError(f"dataset root not found: {root} (pass --root where the videos are now)")
    backends = tuple(backends)
    store.record_settings(
        build, STAGE, {"sampling": sampling, "png_level": png_level, "backends": list(backends)}
    )

    ledger = store.Ledger(build, STAGE, FRAMES_SCHEMA, sort_by=["key", "frame_index"])
    path_of = dict(zip(videos.column("key").to_pylist(), videos.column("path").to_pylist()))
    keys = part.select(list(path_of))
    done = ledger.done_keys(retry_statuses=[status.value for status in FAILED] if retry_failed else ())
    workers = workers or available_cores()
    threads = max(1, available_cores() // workers)
    frames_root = build / FRAMES_DIR
    frames_root.mkdir(parents=True, exist_ok=True)
    tasks = [
        VideoTask(key, str(root / path_of[key]), str(frames_root), sampling, backends, png_level, threads)
        for key in keys
        if key not in done
    ]
    # Largest files first (a rough measure of the work), so the last tasks to run are short ones
    # and no core idles at the end while one long video finishes.
    tasks.sort(key=lambda task: -_file_size(task.source))

    by_status: Counter[str] = Counter()
    failed: list[tuple[str, str, str]] = []
    frames = 0
    with (
        stage_progress("extract", len(tasks), "videos", "frames", show_progress) as progress,
        ledger.writer(part, flush_seconds=flush_seconds) as writer,
    ):
        results = run_tasks(extract_video, tasks, workers, stall_seconds, retry=_retry_after_stall)
        for task, result in results:
            rows = _stalled_rows(task, result) if isinstance(result, Stalled) else result
            writer.add_item(rows)
            status = rows[0]["status"]
            by_status[status] += 1
            got = rows[0]["frames_got"]
            frames += got
            if status in FAILED:
                failed.append((task.key, status, rows[0]["error"]))
            progress.advance(1, got)
    seconds = progress.elapsed
    store.log_run(build, STAGE, part, seconds, len(tasks))
    merged = ledger.merge_when_complete(path_of)
    return ExtractReport(len(keys), len(keys) - len(tasks), dict(by_status), frames, seconds, merged, failed)
