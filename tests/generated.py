"""Generated builds for the stages after crop: videos.parquet from a tree of empty files, then
frames.parquet, faces.parquet and crop PNGs written directly (the tables are the contract between
stages), each row stamped with the `made_from` its stage's plan gives, as a real run would."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.registry import make_stage
from ffx.pipeline.engine.statuses import NO_TRACK, Status
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.index import run_index
from tests.conftest import touch

CROP_SIDE = 48
FACELESS_KEY = "fake__none"


def crop_pixels(key: str, frame_index: int, side: int = CROP_SIDE) -> np.ndarray:
    """A crop whose pixels depend on its video and frame (seeded, smoothed noise)."""
    seed = int(hashlib.sha256(f"{key}/{frame_index}".encode()).hexdigest()[:8], 16)
    noise = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2)


def make_cropped_build(
    tmp_path: Path,
    videos_per_label: int = 8,
    frames: int = 5,
    side: int = CROP_SIDE,
    pixels: Callable[[str, int, int], np.ndarray] = crop_pixels,
    seed: int = 0,
) -> Path:
    """`videos_per_label` real and fake videos with `frames` crops each, plus `fake/none`, a video
    in which no face was found."""
    root = tmp_path / "data"
    for label in ("real", "fake"):
        for number in range(videos_per_label):
            touch(root, f"{label}/clip{number}.mp4")
    touch(root, "fake/none.mp4")
    build = tmp_path / "build"
    run_index(load_manifest("folder", {"seed": seed}), root, build)
    keys = pq.read_table(build / "videos.parquet").column("key").to_pylist()
    write_stamped(build, "frames", [frame_row(key, frame, side) for key in keys for frame in range(frames)])
    rows = []
    for key in keys:
        for frame in range(frames):  # the frames crop read (the files must exist: a build with a
            path = build / frame_row(key, frame, side)["path"]  # frame gone redoes that video)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(pixels(key, frame, side), 1))
        if key == FACELESS_KEY:
            rows += [face_row(key, frame, "", side) for frame in range(frames)]
            continue
        for frame in range(frames):
            path = f"faces/{key}/{frame:06d}.png"
            (build / path).parent.mkdir(parents=True, exist_ok=True)
            (build / path).write_bytes(encode_png(pixels(key, frame, side), 1))
            rows.append(face_row(key, frame, path, side))
    write_stamped(build, "faces", rows)
    return build


def write_stamped(build: Path, stage: str, rows: list[dict]) -> None:
    """Write a stage table whose rows carry the digests the stage's plan gives for this build."""
    made_from = make_stage(stage).plan(BuildDir(build), load_manifest(build / "manifest.toml")).made_from
    stamped = [row | {"made_from": made_from[row["key"]]} for row in rows]
    pq.write_table(pa.Table.from_pylist(stamped, schema=make_stage(stage).schema), build / f"{stage}.parquet")


def frame_row(key: str, frame: int, side: int) -> dict:
    """A frames.parquet row of a decoded frame (its PNG is not needed after crop)."""
    return {
        "key": key,
        "frame_index": frame,
        "timestamp": frame / 25,
        "width": side,
        "height": side,
        "path": f"frames/{key}/{frame:06d}.png",
        "pixels_sha256": hashlib.sha256(f"{key}/{frame}".encode()).hexdigest(),
        "status": Status.OK.value,
        "error": "",
        "backend": "pyav",
        "frames_asked": 30,
        "frames_got": 30,
        "video_frames": 30,
        "fps": 25.0,
        "codec": "h264",
        "rotation": 0,
    }


def face_row(key: str, frame: int, path: str, side: int) -> dict:
    """A faces.parquet row: a found face when `path` is set, else a frame without one."""
    row = {
        "key": key,
        "frame_index": frame,
        "track": 0 if path else NO_TRACK,
        "n_faces": 1 if path else 0,
        "box_source": "detected" if path else "",
        "path": path,
        "status": (Status.OK if path else Status.NO_FACE).value,
        "error": "" if path else "no face found",
        "landmarks": [20.0] * 10 if path else None,
    }
    if path:
        row |= {"x1": 10.0, "y1": 12.0, "x2": 40.0, "y2": 44.0, "prob": 0.999}
        row |= {"crop_x1": 0, "crop_y1": 0, "crop_x2": side, "crop_y2": side}
    return row


def indexed_clips(tmp_path: Path, count: int, frames: int, width: int, height: int) -> Path:
    """`count` index videos (`clip{n}.mp4`) under tmp_path/data/real, indexed with the folder
    recipe into tmp_path/build; returns the build."""
    from ffx.synthetic import write_h264_index_video

    for number in range(count):
        write_h264_index_video(tmp_path / "data" / "real" / f"clip{number}.mp4", frames, width, height)
    build = tmp_path / "build"
    run_index(load_manifest("folder"), tmp_path / "data", build)
    return build


def shard_entry(name: str, samples: int, data: bytes, labels: dict[str, int]) -> dict:
    """A shards/index.json entry of the shard `name` ({split}-NNNNNN.tar) holding `data`."""
    return {
        "name": name,
        "split": name.split("-")[0],
        "samples": samples,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "labels": labels,
    }
