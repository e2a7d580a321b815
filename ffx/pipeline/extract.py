"""`ffx extract`: the sampled frames of every indexed video as lossless PNGs plus frames.parquet.

Each video is one task in a worker process. The worker decodes with the first backend of the
chain (PyAV, then decord, then OpenCV) and falls back to the next when a backend fails or gets
fewer frames than the file holds; the main process replaces a worker that hangs or crashes and
retries the video with the remaining backends. Frames are written into a temporary folder that
is renamed to `frames/{key}/` when the video is done, so no half-written PNG ever carries a
final name, and the video's rows reach the ledger only after that rename.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ffx.errors import FfxError, InputError
from ffx.pipeline import store
from ffx.pipeline.decode import BACKENDS, DEFAULT_BACKENDS, DecodeFailure, VideoInfo, count_frames, probe
from ffx.pipeline.distribute import Part
from ffx.pipeline.images import encode_png
from ffx.pipeline.index import INDEX_FILE, MANIFEST_FILE, VIDEOS_TABLE
from ffx.pipeline.manifest import load_manifest
from ffx.pipeline.progress import stage_progress
from ffx.pipeline.sampling import FramePlan, parse_sampling
from ffx.pipeline.schema import FRAMES_SCHEMA, NO_FRAME, Status
from ffx.pipeline.workers import Stalled, available_cores, run_tasks

STAGE = "frames"
FRAMES_DIR = "frames"
FAILED = (Status.PARTIAL, Status.DECODE_ERROR, Status.TIMEOUT, Status.MISSING, Status.ERROR)


@dataclass(frozen=True)
class VideoTask:
    """One video for a worker: where it is, where its frames go, and how to decode it."""

    key: str
    source: str
    frames_root: str
    sampling: str
    backends: tuple[str, ...]
    png_level: int
    threads: int
    failures: tuple[str, ...] = ()  # backends that hung or crashed on this video, with why
    hung: bool = False  # whether one of those failures was a hang rather than a crash


@dataclass
class Attempt:
    """One backend's pass over a video: frames written into `temp_dir`, and how it ended."""

    backend: str
    temp_dir: Path
    frames: list[tuple[int, float | None, int, int]] = field(default_factory=list)
    error: str = ""
    status: Status = Status.OK


def frame_file(key: str, frame_index: int) -> str:
    """A frame's PNG path relative to the build; zero-padded so sorting gives frame order."""
    return f"{FRAMES_DIR}/{key}/{frame_index:06d}.png"


def extract_video(task: VideoTask, report) -> list[dict]:
    """Worker entry point: decode one video, publish its frames, return its ledger rows."""
    source = Path(task.source)
    frames_root = Path(task.frames_root)
    store.remove_item_temps(frames_root, task.key)
    if not source.exists():
        return _rows_without_frames(task, Status.MISSING, f"file not found: {source}")
    if source.is_dir():
        return _rows_without_frames(task, Status.ERROR, f"a directory, not a video file: {source}")
    try:
        size = source.stat().st_size
        with open(source, "rb"):
            pass
    except OSError as error:
        return _rows_without_frames(task, Status.ERROR, f"cannot read {source}: {error.strerror}")
    if size == 0:
        return _rows_without_frames(task, Status.DECODE_ERROR, "empty file (0 bytes)")
    try:
        info = probe(source)
        sampling = parse_sampling(task.sampling)
        total = info.frames if info.frames > 0 else None
        if sampling.needs_length and total is None:
            total = count_frames(source)
        plan = sampling.plan(total)
    except (DecodeFailure, FfxError) as error:
        return _rows_without_frames(task, Status.DECODE_ERROR, f"not a readable video: {error}")

    attempts: list[Attempt] = []
    for backend in task.backends:
        report((backend, 0))
        attempt = _decode_with(backend, source, plan, task, report)
        attempts.append(attempt)
        attempt.status, attempt.error = _classify(attempt, plan, info)
        if attempt.status == Status.OK:
            break
    chosen = max(attempts, key=lambda attempt: len(attempt.frames))  # first of the best on ties
    store.publish_dir(chosen.temp_dir if chosen.frames else None, frames_root, task.key)
    store.remove_item_temps(frames_root, task.key)
    notes = list(task.failures) + [f"{a.backend}: {a.error}" for a in attempts if a.error and a is not chosen]
    error = "; ".join(notes + ([chosen.error] if chosen.error else []))
    if not chosen.frames:
        return _rows_without_frames(task, Status.DECODE_ERROR, error, info, chosen.backend)
    return [
        _row(task, frame_index, timestamp, width, height, frame_file(task.key, frame_index))
        | _video_facts(chosen.status, error, chosen.backend, plan, len(chosen.frames), info)
        for frame_index, timestamp, width, height in chosen.frames
    ]


def _decode_with(backend: str, source: Path, plan: FramePlan, task: VideoTask, report) -> Attempt:
    """Run one backend, writing each kept frame as a PNG into the attempt's temp folder.

    Decoder exceptions end the attempt (its frames so far are kept); write errors propagate,
    because a full or read-only output disk is for the user to fix, not an item status."""
    attempt = Attempt(backend, store.item_temp_dir(Path(task.frames_root), task.key, backend))
    attempt.temp_dir.mkdir(parents=True)
    frames = BACKENDS[backend](source, plan, task.threads)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except Exception as error:  # decoders raise assorted types; all mean "this file broke here"
            attempt.error = str(error) or type(error).__name__
            break
        height, width = frame.rgb.shape[:2]
        png = encode_png(frame.rgb, task.png_level)
        (attempt.temp_dir / f"{frame.frame_index:06d}.png").write_bytes(png)
        attempt.frames.append((frame.frame_index, frame.timestamp, width, height))
        report((backend, len(attempt.frames)))
    return attempt


def _classify(attempt: Attempt, plan: FramePlan, info: VideoInfo) -> tuple[Status, str]:
    """The status of one attempt and the message that explains it ("" when all is well)."""
    got = len(attempt.frames)
    if not got:
        return Status.DECODE_ERROR, attempt.error or "no frame could be decoded"
    last = attempt.frames[-1][0]
    if attempt.error:
        return Status.PARTIAL, f"stopped after frame {last}: {attempt.error}"
    # Frames the container says exist and the plan keeps: fewer means the file is cut short.
    expected = _kept_below(plan, info.frames) if info.frames > 0 else got
    if got < expected:
        return Status.PARTIAL, f"decoded up to frame {last} of the {info.frames} the container lists"
    if plan.asked is not None and got < plan.asked:
        return Status.SHORT, f"the video has {last + 1} frames; {got} of {plan.asked} asked for"
    return Status.OK, ""


def _kept_below(plan: FramePlan, frame_count: int) -> int:
    """How many of the indices 0..frame_count-1 the plan keeps."""
    if plan.wanted is not None:
        return sum(1 for frame_index in plan.wanted if frame_index < frame_count)
    return len(range(plan.offset, frame_count, plan.step))


def _row(task: VideoTask, frame_index: int, timestamp, width: int, height: int, path: str) -> dict:
    return {
        "key": task.key,
        "frame_index": frame_index,
        "timestamp": timestamp,
        "width": width,
        "height": height,
        "path": path,
    }


def _video_facts(
    status: Status, error: str, backend: str, plan: FramePlan | None, got: int, info: VideoInfo | None
) -> dict:
    return {
        "status": status.value,
        "error": error,
        "backend": backend,
        "frames_asked": -1 if plan is None or plan.asked is None else plan.asked,
        "frames_got": got,
        "video_frames": info.frames if info else -1,
        "fps": info.fps if info else 0.0,
        "codec": info.codec if info else "",
        "rotation": info.rotation if info else 0,
    }


def _rows_without_frames(
    task: VideoTask, status: Status, error: str, info: VideoInfo | None = None, backend: str = ""
) -> list[dict]:
    """The single row of a video that gave no frame."""
    width, height = (info.width, info.height) if info else (0, 0)
    facts = _video_facts(status, error, backend, None, 0, info)
    return [_row(task, NO_FRAME, None, width, height, "") | facts]


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
    store.remove_item_temps(Path(task.frames_root), task.key)
    where = f"{stalled.last_report[0]}: " if stalled.last_report else "probing: "
    failures = (*task.failures, where + stalled.reason)
    status = Status.TIMEOUT if task.hung or stalled.hung else Status.DECODE_ERROR
    return _rows_without_frames(task, status, "; ".join(failures))


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
