"""The worker side of `ffx extract`: decode one video, publish its PNGs, return its rows.

Each frame's row records the sha256 of its decoded pixels. When the task carries a crop job
(`ffx build`), the worker crops the faces of the frames it has just decoded (one decode per frame;
the PNGs are written only when the recipe keeps frames) and returns the crop rows as well.
It imports only what decoding and writing need (no pyarrow, pydantic or rich; torch only once a
video needs detection), so that each worker process starts in about a quarter of a second;
`ffx.pipeline.stages.extract` runs the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffx.errors import FfxError
from ffx.pipeline.engine import atomic, publish
from ffx.pipeline.engine.builddir import frame_file
from ffx.pipeline.engine.identity import crop_made_from, frames_identity, pixels_sha256
from ffx.pipeline.engine.statuses import NO_FRAME, Status
from ffx.pipeline.media.decode import BACKENDS, DecodeFailure, VideoInfo, count_frames, probe
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.sampling import FramePlan, parse_sampling
from ffx.pipeline.workers.crop import CropJob, crop_faces


@dataclass(frozen=True)
class VideoTask:
    """One video for a worker: where it is, where its frames go, and how to decode it."""

    key: str
    source: str
    frames_root: str
    faces_root: str
    sampling: str
    backends: tuple[str, ...]
    png_level: int
    threads: int
    keep_frames: bool = True  # write each frame's PNG under frames/
    crop: CropJob | None = None  # crop the decoded frames' faces in the same pass (`ffx build`)
    failures: tuple[str, ...] = ()  # backends that hung or crashed on this video, with why
    hung: bool = False  # whether one of those failures was a hang rather than a crash
    png_encoder: str = "opencv"  # the recipe's `png_encoder`


@dataclass
class Extracted:
    """A worker's result: the video's frames rows and, when it cropped them too, its crop rows
    (their `made_from` set) and how many frames it ran detection on."""

    frames: list[dict]
    faces: list[dict] | None = None
    detected: int = 0


@dataclass
class Attempt:
    """One backend's pass over a video: frames written into `temp_dir`, and how it ended."""

    backend: str
    temp_dir: Path
    frames: list[tuple[int, float | None, int, int, str]] = field(default_factory=list)
    images: list = field(default_factory=list)  # the decoded frames, kept when they are cropped next
    error: str = ""
    status: Status = Status.OK


def extract_video(task: VideoTask, report) -> Extracted:
    """Worker entry point: decode one video, publish its frames (and crops), return its rows."""
    return Extracted(_decode_video(task, report)) if task.crop is None else _decode_and_crop(task, report)


def _decode_and_crop(task: VideoTask, report) -> Extracted:
    """Decode, then crop the frames still in memory; the crop rows get the `made_from` that
    `ffx crop` computes from the frames rows, so it finds them current."""
    images: list = []
    frames = _decode_video(task, report, images)
    if frames[0]["frame_index"] == NO_FRAME:
        return Extracted(frames, [])  # no frame to crop: `ffx crop` records why
    job = task.crop
    indices = [row["frame_index"] for row in frames]
    faces, detected = crop_faces(task.key, indices, images, job, Path(task.faces_root), report)
    made_from = crop_made_from(job.recipe, frames_identity(frames), job.original)
    return Extracted(frames, [row | {"made_from": made_from} for row in faces], detected)


def _decode_video(task: VideoTask, report, images: list | None = None) -> list[dict]:
    """Decode one video, publish its frames (when kept) and return its frames rows; the decoded
    frames go into `images` when it is given."""
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
        attempt = _decode_with(backend, source, plan, task, report, images is not None)
        attempts.append(attempt)
        attempt.status, attempt.error = _classify(attempt, plan, info)
        if attempt.status == Status.OK:
            break
    chosen = max(attempts, key=lambda attempt: len(attempt.frames))  # first of the best on ties
    keep = chosen.frames and task.keep_frames
    publish.publish_dir(chosen.temp_dir if keep else None, frames_root, task.key)
    publish.remove_item_temps(frames_root, task.key)
    error = "; ".join([*task.failures, *_attempt_notes(attempts, chosen)])
    if not chosen.frames:
        return rows_without_frames(task.key, Status.DECODE_ERROR, error, info, chosen.backend)
    if images is not None:
        images += chosen.images
    return [
        _row(
            task.key,
            frame_index,
            timestamp,
            width,
            height,
            frame_file(task.key, frame_index) if task.keep_frames else "",
            sha256,
        )
        | _video_facts(chosen.status, error, chosen.backend, plan, len(chosen.frames), info)
        for frame_index, timestamp, width, height, sha256 in chosen.frames
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


def _decode_with(
    backend: str, source: Path, plan: FramePlan, task: VideoTask, report, keep_images: bool
) -> Attempt:
    """Run one backend, writing each kept frame as a PNG into the attempt's temp folder (when the
    recipe keeps frames) and keeping the frames in memory when `keep_images`.

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
        if task.keep_frames:
            png = encode_png(frame.rgb, task.png_level, task.png_encoder)
            atomic.write_file(attempt.temp_dir / f"{frame.frame_index:06d}.png", png)
        if keep_images:
            attempt.images.append(frame.rgb)
        attempt.frames.append((frame.frame_index, frame.timestamp, width, height, pixels_sha256(frame.rgb)))
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


def _row(key: str, frame_index: int, timestamp, width: int, height: int, path: str, sha256: str = "") -> dict:
    return {
        "key": key,
        "frame_index": frame_index,
        "timestamp": timestamp,
        "width": width,
        "height": height,
        "path": path,
        "pixels_sha256": sha256,
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
