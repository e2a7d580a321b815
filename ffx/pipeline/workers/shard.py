"""The worker side of `ffx shard`: one video's crops as WebDataset tar records, in every stored space.

No pyarrow or pydantic here, so a worker starts quickly; `ffx.pipeline.stages.shard` runs the stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import premade_file
from ffx.pipeline.engine.statuses import BadInput, Status
from ffx.pipeline.media.color import convert
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.landmarks import crop_points
from ffx.pipeline.media.tars import END_OF_ARCHIVE, tar_records


@dataclass(frozen=True)
class FaceCrop:
    """One crop of faces.parquet that becomes one sample."""

    frame_index: int
    track: int
    path: str  # crop PNG relative to the build
    box: tuple[float, float, float, float]
    crop_box: tuple[int, int, int, int]
    prob: float
    dense_landmarks: tuple[float, ...] = ()  # x,y in frame pixels (`crop.landmarks`), or none
    crop_matrix: tuple[float, ...] = ()  # the aligned preset's frame-to-crop map, or none
    mask_path: str = ""  # the crop's mask PNG relative to the build (`crop.mask`), or ""


@dataclass(frozen=True)
class SampleTask:
    """One video for a worker: its crops and the facts every sample's JSON carries."""

    key: str
    build: str
    samples_file: str  # where the video's records go
    crops: tuple[FaceCrop, ...]
    video: dict  # dataset, source, label, label_name, method, split, group
    spaces: tuple[str, ...]  # those stored: the build's, or rgb alone (`[shard] stored_spaces`)
    png_level: int
    detector_outputs: bool = False  # the detector's floats in the JSON too (`[shard] detector_outputs`)
    png_encoder: str = "opencv"  # the recipe's `png_encoder`


CROP_BOX = ("crop_x1", "crop_y1", "crop_x2", "crop_y2")  # faces.parquet's window columns


def sample_name(key: str, frame_index: int, track: int) -> str:
    """The WebDataset key of a crop: `{key}_{frame:04d}`, `_{track:02d}` added for extra faces."""
    name = f"{key}_{frame_index:04d}"
    return name if track == 0 else f"{name}_{track:02d}"


def sample_row(key: str, sample: str, frame_index: int, track: int, video: dict) -> dict:
    """A samples.parquet row (`offset`, `length` set by the caller once the records exist)."""
    return {
        "key": key,
        "sample": sample,
        "frame_index": frame_index,
        "track": track,
        "split": video["split"],
        "label": video["label"],
        "offset": 0,
        "length": 0,
        "sha256": "",
        "status": Status.OK.value,
        "error": "",
    }


def video_facts(video: dict) -> dict:
    """The video-level fields of every sample's JSON, from its videos.parquet row."""
    return {
        "dataset": video["dataset"],
        "source": video["path"],
        "label": video["label"],
        "label_name": video["label_name"],
        "method": video["method"],
        "split": video["split"],
        "group": video["group"],
    }


def face_crop(row: dict) -> FaceCrop:
    """The crop of a faces row, as read from faces.parquet (or `as_stored`)."""
    return FaceCrop(
        row["frame_index"],
        row["track"],
        row["path"],
        (row["x1"], row["y1"], row["x2"], row["y2"]),
        (row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]),
        row["prob"],
        tuple(row.get("dense_landmarks") or ()),
        tuple(row.get("crop_matrix") or ()),
        row.get("mask_path") or "",
    )


def as_stored(row: dict) -> dict:
    """A faces row still in a worker's hands, its values as faces.parquet gives them back (float32
    floats, plain ints), so its crop equals the crop of the row read back from the table."""
    stored = row | {name: float(np.float32(row[name])) for name in ("x1", "y1", "x2", "y2", "prob")}
    stored |= {name: int(row[name]) for name in ("frame_index", "track", *CROP_BOX)}
    if row.get("dense_landmarks"):
        stored["dense_landmarks"] = [float(value) for value in np.asarray(row["dense_landmarks"], np.float32)]
    return stored


def sample_identity(task: SampleTask) -> str:
    """Everything a video's samples are made from but its crop files' bytes (and where files lie)."""
    facts = [task.key, [astuple(crop) for crop in task.crops], task.video, task.spaces]
    facts += [task.png_level, task.detector_outputs, task.png_encoder]
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def sample_block(
    task: SampleTask, crop: FaceCrop, rgb_png: bytes, rgb: np.ndarray, mask_png: bytes | None
) -> bytes:
    """One crop's tar records: its label, its JSON and a PNG per stored space (the crop file's own
    bytes as `rgb.png`), and its mask."""
    name = sample_name(task.key, crop.frame_index, crop.track)
    metadata = task.video | {
        "video": task.key,
        "frame_index": crop.frame_index,
        "track": crop.track,
        "crop_box": list(crop.crop_box),
    }
    if task.detector_outputs:
        metadata |= detector_outputs(crop, rgb.shape[1])
    members = [
        (f"{name}.cls", str(task.video["label"]).encode()),
        (f"{name}.json", json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()),
    ]
    for space in task.spaces:
        png = rgb_png if space == "rgb" else encode_png(convert(rgb, space), task.png_level, task.png_encoder)
        members.append((f"{name}.{space}.png", png))
    if mask_png is not None:
        members.append((f"{name}.mask.png", mask_png))
    return tar_records(members)


def write_samples(task: SampleTask, blocks: list[bytes], target: Path) -> list[dict]:
    """Write a video's samples file from its crops' blocks (in `task.crops` order); its rows."""
    rows, offset = [], 0
    for crop, block in zip(task.crops, blocks):
        name = sample_name(task.key, crop.frame_index, crop.track)
        rows.append(
            sample_row(task.key, name, crop.frame_index, crop.track, task.video)
            | {"offset": offset, "length": len(block), "sha256": hashlib.sha256(block).hexdigest()}
        )
        offset += len(block)
    atomic.write_bytes(target, b"".join(blocks) + END_OF_ARCHIVE)
    return rows


def encode_samples(task: SampleTask, report) -> list[dict]:
    """Worker entry point: write the video's samples file and return one row per crop. Samples
    that `ffx build`'s pass made from the same crops are taken as they are (`take_premade`)."""
    build = Path(task.build)
    target = Path(task.samples_file)
    for temp in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed worker
        temp.unlink()
    premade = take_premade(task)
    if premade is not None:
        report(len(premade))
        return premade
    blocks: list[bytes] = []
    for crop in task.crops:
        rgb_png = _read(build / crop.path)
        bgr = cv2.imdecode(np.frombuffer(rgb_png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadInput(f"{build / crop.path} is not a readable PNG", Status.ERROR)
        mask_png = _read(build / crop.mask_path) if crop.mask_path else None
        blocks.append(sample_block(task, crop, rgb_png, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask_png))
        report(crop.frame_index)
    return write_samples(task, blocks, target)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path} not found (deleted after `ffx crop`?)") from None


def write_premade(task: SampleTask, made: list[tuple[FaceCrop, bytes, np.ndarray, bytes | None]]) -> None:
    """In `ffx build`'s pass: a video's samples from its crops' pixels still in memory, left at
    `premade_file` with what they were made from, for `ffx shard` to take (no crop decoded again)."""
    made = sorted(made, key=lambda item: (item[0].frame_index, item[0].track))
    task = replace(task, crops=tuple(crop for crop, *_ in made))
    tar = premade_file(task.samples_file)
    blocks = [sample_block(task, crop, png, rgb, mask) for crop, png, rgb, mask in made]
    rows = write_samples(task, blocks, tar)
    files = {crop.path: hashlib.sha256(png).hexdigest() for crop, png, _, _ in made}
    files |= {
        crop.mask_path: hashlib.sha256(mask).hexdigest() for crop, _, _, mask in made if mask is not None
    }
    facts = {"identity": sample_identity(task), "files": files, "rows": rows}
    atomic.write_bytes(tar.with_suffix(".json"), json.dumps(facts, sort_keys=True).encode())


def take_premade(task: SampleTask) -> list[dict] | None:
    """The rows of the samples `ffx build`'s pass made for this very task, its file moved into
    place; None (and the premade files removed) when there are none, or when they were made from
    other crops or settings, or a crop or mask file no longer holds the bytes they were made from."""
    tar = premade_file(task.samples_file)
    facts_file = tar.with_suffix(".json")
    try:
        facts = json.loads(facts_file.read_bytes())
        current = facts["identity"] == sample_identity(task) and all(
            hashlib.sha256((Path(task.build) / path).read_bytes()).hexdigest() == sha
            for path, sha in facts["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        current = False
    if current:
        try:
            os.replace(tar, task.samples_file)
        except FileNotFoundError:  # its JSON left without its tar (the tar deleted since)
            current = False
    facts_file.unlink(missing_ok=True)
    tar.unlink(missing_ok=True)
    return facts["rows"] if current else None


def detector_outputs(crop: FaceCrop, side: int) -> dict:
    """The detector's floats of a crop, for its sample's JSON: box and probability, and (present
    only when the build has them) an aligned crop's matrix and the landmarks, in the frame and in
    the crop."""
    outputs: dict = {"box": list(crop.box), "prob": crop.prob}
    if crop.crop_matrix:
        outputs["crop_matrix"] = list(crop.crop_matrix)
    if crop.dense_landmarks:
        points = crop_points(crop.dense_landmarks, crop.crop_box, side, crop.crop_matrix or None)
        outputs["dense_landmarks"] = list(crop.dense_landmarks)
        outputs["crop_landmarks"] = [round(float(value), 3) for value in points.reshape(-1)]
    return outputs
