"""Video decoding backends: each yields the kept frames of one sequential pass, upright, as RGB.

PyAV is tried first, then decord, then OpenCV. Every backend decodes from the first frame on
and stops after the last frame a plan can keep, so `first:N` never seeks.
Frame i is the i-th frame the decoder outputs (presentation order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffx.pipeline.media.sampling import FramePlan

# Broken inputs are reported as item statuses; FFmpeg's own log lines would only flood the console.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Error: )?")


class DecodeFailure(Exception):
    """The input could not be decoded (not a video, no video stream, corrupt data)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (nothing decoded)."""

    codec: str
    fps: float
    frames: int  # frame count in the container's index; -1 when it has none
    width: int
    height: int
    rotation: int  # degrees counter-clockwise that turn a decoded frame upright


@dataclass(frozen=True)
class DecodedFrame:
    """One kept frame: its index in decode order, presentation time (s) and upright RGB pixels."""

    frame_index: int
    timestamp: float | None
    rgb: np.ndarray


def probe(path: Path) -> VideoInfo:
    """Stream metadata from PyAV (only the first frame is decoded, for its rotation), or a
    DecodeFailure saying what the file is instead."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.format.name.endswith("_pipe") or container.format.name == "image2":
                raise DecodeFailure(f"a still image ({container.format.name}), not a video")
            if not container.streams.video:
                kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
                raise DecodeFailure(f"no video stream ({', '.join(kinds)})")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 0
            return VideoInfo(
                codec=stream.codec_context.name,
                fps=float(rate),
                frames=int(stream.frames) or -1,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                rotation=_first_frame_rotation(container, stream),
            )
    except av.error.FFmpegError as error:
        raise DecodeFailure(_ffmpeg_message(error)) from None


def count_frames(path: Path) -> int:
    """Count video packets without decoding (for containers that do not store a frame count)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as error:
        raise DecodeFailure(_ffmpeg_message(error)) from None


def _first_frame_rotation(container, stream) -> int:
    """Display rotation of the first frame (streams do not expose it in PyAV); 0 if none decodes."""
    try:
        return round(next(container.decode(stream)).rotation) % 360
    except Exception:  # a broken stream is reported by the backends, not here
        return 0


def _ffmpeg_message(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.strip().rstrip(".")


def _decord_message(error: Exception) -> str:
    """decord's first line without its clock time and source location (keeps tables reproducible)."""
    return _DECORD_PREFIX.sub("", str(error).splitlines()[0] if str(error) else type(error).__name__)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a frame by the display rotation (degrees counter-clockwise), contiguous for writers."""
    quarter_turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def decode_pyav(path: Path, plan: FramePlan, threads: int) -> Iterator[DecodedFrame]:
    """PyAV: frames in decode order; display rotation applied from each frame's side data."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeFailure("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            for frame_index, frame in enumerate(container.decode(stream)):
                if plan.keeps(frame_index):
                    rgb = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                    yield DecodedFrame(frame_index, frame.time, rgb)
                if plan.done(frame_index):
                    return
    except av.error.FFmpegError as error:
        raise DecodeFailure(_ffmpeg_message(error)) from None


def decode_decord(path: Path, plan: FramePlan, threads: int) -> Iterator[DecodedFrame]:
    """decord: sequential `next`/`skip_frames` (no random access); decord applies rotation."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    except (decord.DECORDError, RuntimeError) as error:
        raise DecodeFailure(_decord_message(error)) from None
    length = len(reader)
    frame_index = 0
    try:
        while frame_index < length:
            if plan.keeps(frame_index):
                rgb = reader.next().asnumpy()
                timestamp = float(reader.get_frame_timestamp(frame_index)[0])
                if plan.done(frame_index):
                    del reader  # stops decord's read-ahead thread before the last frame is written
                    yield DecodedFrame(frame_index, timestamp, rgb)
                    return
                yield DecodedFrame(frame_index, timestamp, rgb)
            else:
                reader.skip_frames(1)
                if plan.done(frame_index):
                    return
            frame_index += 1
    except StopIteration:
        return
    except (decord.DECORDError, RuntimeError) as error:
        raise DecodeFailure(_decord_message(error)) from None


def decode_opencv(path: Path, plan: FramePlan, threads: int) -> Iterator[DecodedFrame]:
    """OpenCV (FFmpeg backend): `grab` skips, `retrieve` converts; OpenCV applies rotation."""
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if not capture.isOpened():
        raise DecodeFailure("OpenCV cannot open the file as a video")
    try:
        frame_index = 0
        while capture.grab():
            if plan.keeps(frame_index):
                ok, bgr = capture.retrieve()
                if not ok:
                    raise DecodeFailure(f"OpenCV could not convert frame {frame_index}")
                timestamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield DecodedFrame(frame_index, timestamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if plan.done(frame_index):
                return
            frame_index += 1
    finally:
        capture.release()


Backend = Callable[[Path, FramePlan, int], Iterator[DecodedFrame]]
BACKENDS: dict[str, Backend] = {"decord": decode_decord, "pyav": decode_pyav, "opencv": decode_opencv}
# PyAV first: on 2 cores with PNG writing in between frames it used 26 ms of CPU per 1080p frame
# where decord used 47, because decord's reader keeps decoding ahead in a background thread.
DEFAULT_BACKENDS = ("pyav", "decord", "opencv")
