"""The worker side of `ffx extract`: decode one video, publish its PNGs, return its rows.

It imports only what decoding and writing need (no pyarrow, pydantic or rich), so that each
worker process starts in about a quarter of a second; `ffx.pipeline.stages.extract` runs the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffx.errors import FfxError
from ffx.pipeline.engine import atomic, publish
from ffx.pipeline.engine.builddir import frame_file
from ffx.pipeline.engine.statuses import NO_FRAME, Status
from ffx.pipeline.media.decode import BACKENDS, DecodeFailure, VideoInfo, count_frames, probe
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.sampling import FramePlan, parse_sampling


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


def extract_video(task: VideoTask, report) -> list[dict]:
    """Worker entry point: decode one video, publish its frames, return its ledger rows."""
    source = Path(task.source)
    frames_root = Path(task.frames_root)
    publish.remove_item_temps(frames_root, task.key)
    if not source.exists():
        return rows_without_frames(task.key, Status.MISSING, f"file not found: {source}")
    if source.is_dir():
        return rows_without_frames(task.key, Status.ERROR, f"a directory, not a video file: {source}")
    try:
        size = source.stat().st_size
        with open(source, "rb"):
            pass
    except OSError as error:
        return rows_without_frames(task.key, Status.ERROR, f"cannot read {source}: {error.strerror}")
    if size == 0:
        return rows_without_frames(task.key, Status.DECODE_ERROR, "empty file (0 bytes)")
    try:
        info = probe(source)
        sampling = parse_sampling(task.sampling)
        total = info.frames if info.frames > 0 else None
        if sampling.needs_length and total is None:
            total = count_frames(source)
        plan = sampling.plan(total)
    except (DecodeFailure, FfxError) as error:
        return rows_without_frames(task.key, Status.DECODE_ERROR, f"not a readable video: {error}")

    attempts: list[Attempt] = []
    for backend in task.backends:
        report((backend, 0))
        attempt = _decode_with(backend, source, plan, task, report)
        attempts.append(attempt)
        attempt.status, attempt.error = _classify(attempt, plan, info)
        if attempt.status == Status.OK:
            break
    chosen = max(attempts, key=lambda attempt: len(attempt.frames))  # first of the best on ties
    publish.publish_dir(chosen.temp_dir if chosen.frames else None, frames_root, task.key)
    publish.remove_item_temps(frames_root, task.key)
    error = "; ".join([*task.failures, *_attempt_notes(attempts, chosen)])
    if not chosen.frames:
        return rows_without_frames(task.key, Status.DECODE_ERROR, error, info, chosen.backend)
    return [
        _row(task.key, frame_index, timestamp, width, height, frame_file(task.key, frame_index))
        | _video_facts(chosen.status, error, chosen.backend, plan, len(chosen.frames), info)
        for frame_index, timestamp, width, height in chosen.frames
    ]


def _attempt_notes(attempts: list[Attempt], chosen: Attempt) -> list[str]:
    """Why each decoder fell short, in the order they were tried; a message several decoders gave
    is said once, naming them (a 1-frame video is short for every decoder alike)."""
    backends_of: dict[str, list[str]] = {}
    for attempt in attempts:
        if attempt.error:
            backends_of.setdefault(attempt.error, []).append(attempt.backend)
    return [
        f"{message} ({', '.join(backends)})" if len(backends) > 1 else f"{backends[0]}: {message}"
        for message, backends in backends_of.items()
    ]


def _decode_with(backend: str, source: Path, plan: FramePlan, task: VideoTask, report) -> Attempt:
    """Run one backend, writing each kept frame as a PNG into the attempt's temp folder.

    Decoder exceptions end the attempt (its frames so far are kept); write errors propagate,
    because a full or read-only output disk is for the user to fix, not an item status."""
    attempt = Attempt(backend, publish.item_temp_dir(Path(task.frames_root), task.key, backend))
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
        atomic.write_file(attempt.temp_dir / f"{frame.frame_index:06d}.png", png)
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


def _row(key: str, frame_index: int, timestamp, width: int, height: int, path: str) -> dict:
    return {
        "key": key,
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


def rows_without_frames(
    key: str, status: Status, error: str, info: VideoInfo | None = None, backend: str = ""
) -> list[dict]:
    """The single row of a video that gave no frame."""
    width, height = (info.width, info.height) if info else (0, 0)
    facts = _video_facts(status, error, backend, None, 0, info)
    return [_row(key, NO_FRAME, None, width, height, "") | facts]
