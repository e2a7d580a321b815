"""Generated inputs for the tests. Builds for the stages after crop: videos.parquet from a tree of
empty files, then frames.parquet, faces.parquet and crop PNGs written directly (the tables are the
contract between stages), each row stamped with the `made_from` its stage's plan gives, as a real
run would. Clips of the bundled demo portrait, and folder builds of them. Lock files of another
node's run. Shards written with tarfile (no pipeline), a checkpoint of a tiny model, and the
`ffx train` / `ffx eval` arguments that read them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import zlib
from collections import Counter
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
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.synthetic import portrait_frames, write_h264_index_video, write_h264_video
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


def portrait_clip(path: Path, frames: int, phase: float, fake: bool = False) -> Path:
    """A clip of the bundled demo portrait (a public-domain face), panned from `phase`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_h264_video(path, portrait_frames(frames, phase=phase, fake=fake))
    return path


def index_folder(root: Path, build: Path, sampling: str = "first:30", size: int = 512) -> Path:
    """The clips under `root` indexed with the folder recipe into `build`."""
    run_index(load_manifest("folder", {"sampling": sampling, "crop.size": size}), root, build)
    return build


def build_folder(root: Path, build: Path, sampling: str = "first:30", size: int = 512) -> Path:
    """The clips under `root` indexed with the folder recipe and extracted into `build`."""
    run_extract(index_folder(root, build, sampling, size), show_progress=False)
    return build


def write_holder(path: Path, host: str, age_seconds: float, job: str = "") -> dict:
    """A lock file as another node's run leaves it, its heartbeat `age_seconds` old."""
    holder = {"host": host, "pid": 4242, "slurm_job": job, "started": time.time() - age_seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder), encoding="utf-8")
    beat = time.time() - age_seconds
    os.utime(path, (beat, beat))
    return holder


# Four samples per shard, two per class: a 2 x 2 batch takes a whole shard.
LAYOUT = {
    "train-000000.tar": [("real_a_0", 0), ("real_a_1", 0), ("fake_b_0", 1), ("fake_b_1", 1)],
    "train-000001.tar": [("real_c_0", 0), ("real_c_1", 0), ("fake_d_0", 1), ("fake_d_1", 1)],
    "val-000000.tar": [("real_e_0", 0), ("real_e_1", 0), ("fake_f_0", 1), ("fake_f_1", 1)],
}


def png(key: str, side: int = 40) -> bytes:
    """A PNG of noise seeded by `key`."""
    pixels = np.random.default_rng(zlib.crc32(key.encode())).integers(0, 256, (side, side, 3), np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


def tar_bytes(samples: list[tuple[str, int]], pngs: dict[str, bytes]) -> bytes:
    """A shard as `ffx shard` lays it out: {key}.cls, {key}.json, {key}.rgb.png per sample."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key, label in samples:
            members = {
                "cls": str(label).encode(),
                "json": json.dumps({"video": key.rsplit("_", 1)[0]}).encode(),
                "rgb.png": pngs.get(key) or png(key),
            }
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime = len(data), 0
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_shards(
    folder: Path,
    layout: dict[str, list[tuple[str, int]]] = LAYOUT,
    pngs: dict[str, bytes] | None = None,
    cut: dict[str, int] | None = None,
) -> Path:
    """BUILD/shards with index.json; `pngs` replaces images, `cut` truncates a shard to N bytes.
    The index describes the files as written (damage included): only reading finds the damage."""
    folder.mkdir(parents=True)
    entries, splits = [], {}
    for name, samples in layout.items():
        data = tar_bytes(samples, pngs or {})[: (cut or {}).get(name)]
        (folder / name).write_bytes(data)
        labels = dict(sorted(Counter(str(label) for _, label in samples).items()))
        entries.append(shard_entry(name, len(samples), data, labels))
        totals = splits.setdefault(entries[-1]["split"], {"samples": 0, "labels": Counter()})
        totals["samples"] += len(samples)
        totals["labels"].update(labels)
    index = {"settings": {"spaces": ["rgb"]}, "shards": entries, "splits": splits}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def make_checkpoint(run: Path) -> Path:
    """RUN/last.safetensors of an untrained tiny model (timm's test_convnext, 32 px, rgb)."""
    from ffx.model.mcx_api import MCXAPI, ModelConfig
    from ffx.train.config import TrainConfig
    from ffx.train.state import save_run_checkpoint

    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=2))
    save_run_checkpoint(run, "last.safetensors", model, TrainConfig(crop=32), 0)
    return run / "last.safetensors"


def train_args(shards: Path, run: Path, *more: str) -> list[str]:
    """`ffx train` of the tiny model on SHARDS for one step, on the CPU."""
    arguments = ["train", "--shards", str(shards), "--run", str(run), "--device", "cpu", "--workers", "1"]
    arguments += ["--backbone", "test_convnext", "--crop", "32", "--epochs", "1", "--steps-per-epoch", "1"]
    return [*arguments, "--classes-per-batch", "2", "--images-per-class", "2", "--freeze-epochs", "0", *more]


def eval_args(checkpoint: Path, shards: Path, *more: str) -> list[str]:
    """`ffx eval` of CHECKPOINT on the val split of SHARDS."""
    return ["eval", "--checkpoint", str(checkpoint), "--shards", str(shards), "--split", "val", *more]
