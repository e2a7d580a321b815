"""The worker side of `ffx shard`: one video's crops as WebDataset tar records, in every stored space.

No pyarrow or pydantic here, so a worker starts quickly; `ffx.pipeline.stages.shard` runs the stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffx.pipeline.engine import atomic
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


def encode_samples(task: SampleTask, report) -> list[dict]:
    """Worker entry point: write the video's samples file and return one row per crop."""
    build = Path(task.build)
    target = Path(task.samples_file)
    for temp in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed worker
        temp.unlink()
    blocks: list[bytes] = []
    rows = []
    offset = 0
    for crop in task.crops:
        name = sample_name(task.key, crop.frame_index, crop.track)
        path = build / crop.path
        try:
            rgb_png = path.read_bytes()
        except FileNotFoundError:
            raise BadInput(f"{path} not found (deleted after `ffx crop`?)") from None
        bgr = cv2.imdecode(np.frombuffer(rgb_png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadInput(f"{path} is not a readable PNG", Status.ERROR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
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
            # The crop file already is the RGB PNG: copied, not encoded again.
            if space == "rgb":
                members.append((f"{name}.rgb.png", rgb_png))
            else:
                data = encode_png(convert(rgb, space), task.png_level, task.png_encoder)
                members.append((f"{name}.{space}.png", data))
        if crop.mask_path:
            try:
                members.append((f"{name}.mask.png", (build / crop.mask_path).read_bytes()))
            except FileNotFoundError:
                raise BadInput(f"{build / crop.mask_path} not found (deleted after `ffx crop`?)") from None
        block = tar_records(members)
        blocks.append(block)
        rows.append(
            sample_row(task.key, name, crop.frame_index, crop.track, task.video)
            | {"offset": offset, "length": len(block), "sha256": hashlib.sha256(block).hexdigest()}
        )
        offset += len(block)
        report(crop.frame_index)
    atomic.write_bytes(target, b"".join(blocks) + END_OF_ARCHIVE)
    return rows


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
