"""The worker side of `ffx crop`: detect, track and crop the faces of one video's frames.

It imports no pyarrow or pydantic (and torch only when a video needs detection), so a worker
starts quickly; `ffx.pipeline.stages.crop` runs the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffx.pipeline.engine import atomic, publish
from ffx.pipeline.engine.builddir import crop_file
from ffx.pipeline.engine.statuses import NO_TRACK, Status
from ffx.pipeline.media.detect import DetectorSettings
from ffx.pipeline.media.faces import Detection, crop_box, track_faces
from ffx.pipeline.media.images import encode_png, read_rgb

BOX_DETECTED, BOX_ORIGINAL = "detected", "original"


@dataclass(frozen=True)
class CropSettings:
    """The recipe's `[crop]` section as plain values for the workers."""

    preset: str
    size: int
    scale: float
    min_prob: float
    all_faces: bool
    png_level: int
    detector: DetectorSettings


# A reused face: box, prob, landmarks (10 values) and the original frame's face count.
ReusedFace = tuple[tuple[float, ...], float, tuple[float, ...], int]


@dataclass(frozen=True)
class CropTask:
    """One video for a worker: its frames on disk and, for a fake, its original's faces."""

    key: str
    frames: tuple[tuple[int, str], ...]  # (frame_index, PNG path relative to the build)
    build: str
    settings: CropSettings
    device: str
    batch_size: int
    original_faces: dict[int, ReusedFace] = field(default_factory=dict)


_detector_cache: dict = {}  # one detector per worker process, made on its first task


def _detector(settings: DetectorSettings, device: str, batch_size: int):
    from ffx.pipeline.media.detect import FaceDetector

    cache_key = (repr(settings), device, batch_size)
    if cache_key not in _detector_cache:
        import torch

        # One intra-op thread whatever the worker count: with more, PyTorch splits reductions
        # differently and boxes move by up to 2e-4 px, which changes every shard's bytes. CPU
        # parallelism comes from one worker process per core instead.
        torch.set_num_threads(1)
        _detector_cache.clear()
        _detector_cache[cache_key] = FaceDetector(settings, device, batch_size)
    return _detector_cache[cache_key]


def crop_video(task: CropTask, report) -> tuple[list[dict], int]:
    """Worker entry point: rows for every frame of one video and how many frames were detected."""
    build = Path(task.build)
    settings = task.settings
    images = []
    for frame_index, path in task.frames:
        images.append(read_rgb(build / path))
        report(("loaded", frame_index))
    reused = {
        position: task.original_faces.get(frame_index)
        for position, (frame_index, _) in enumerate(task.frames)
    }
    to_detect = [position for position, face in reused.items() if face is None]
    detector = _detector(settings.detector, task.device, task.batch_size) if to_detect else None
    found = detector.detect_video([images[position] for position in to_detect]) if detector else []
    report(("detected", len(to_detect)))
    detections = dict(zip(to_detect, found))
    confident = [
        [d for d in detections.get(position, []) if d.prob >= settings.min_prob]
        for position in range(len(images))
    ]
    tracks = track_faces(confident)
    kept = tracks if settings.all_faces else tracks[:1]

    faces_root = build / "faces"
    publish.remove_item_temps(faces_root, task.key)
    temp = publish.item_temp_dir(faces_root, task.key, "crop")
    temp.mkdir(parents=True)
    rows = []
    for position, (frame_index, _) in enumerate(task.frames):
        image = images[position]
        faces = []
        if reused[position] is not None:
            box, prob, landmarks, n_faces = reused[position]
            faces.append(
                (0, Detection(np.asarray(box), prob, np.asarray(landmarks).reshape(5, 2)), BOX_ORIGINAL)
            )
        else:
            n_faces = len(confident[position])
            faces += [
                (number, track.detections[position], BOX_DETECTED)
                for number, track in enumerate(kept)
                if position in track.detections
            ]
        if not faces:
            rows.append(
                _faceless_row(task.key, frame_index, detections.get(position, []), n_faces, settings.min_prob)
            )
            continue
        for track_number, detection, source in faces:
            path = crop_file(task.key, frame_index, track_number, settings.all_faces)
            row = _face_row(task.key, frame_index, track_number, detection, n_faces, source)
            cut = crop_box(
                settings.preset, detection.box, image.shape[1], image.shape[0], settings.size, settings.scale
            )
            if cut[2] - cut[0] < 2 or cut[3] - cut[1] < 2:
                rows.append(
                    row | {"status": Status.NO_FACE.value, "error": "the face box lies outside the frame"}
                )
                continue
            png = encode_png(_resize(image, cut, settings.size), settings.png_level)
            atomic.write_file(temp / Path(path).name, png)
            rows.append(row | dict(zip(("crop_x1", "crop_y1", "crop_x2", "crop_y2"), cut)) | {"path": path})
    publish.publish_dir(temp if any(row["path"] for row in rows) else None, faces_root, task.key)
    publish.remove_item_temps(faces_root, task.key)
    return rows, len(to_detect)


def _resize(image: np.ndarray, box, size: int) -> np.ndarray:
    """Cut `box` and resize it to size x size with PIL's bilinear filter, as facenet-pytorch's
    `extract_face` does on PIL images (the public MCX-API path)."""
    from PIL import Image

    x1, y1, x2, y2 = box
    return np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((size, size), Image.BILINEAR))


def _face_row(
    key: str, frame_index: int, track: int, detection: Detection, n_faces: int, source: str
) -> dict:
    x1, y1, x2, y2 = (float(value) for value in detection.box)
    return {
        "key": key,
        "frame_index": frame_index,
        "track": track,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "prob": detection.prob,
        "landmarks": [float(value) for value in np.asarray(detection.landmarks).reshape(-1)],
        "n_faces": n_faces,
        "box_source": source,
        "path": "",
        "status": Status.OK.value,
        "error": "",
    }


def _faceless_row(
    key: str, frame_index: int, detections: list[Detection], n_faces: int, min_prob: float
) -> dict:
    """The row of a frame without a usable face: why there is none."""
    if n_faces:
        status, error = Status.NO_FACE, f"the video's main face is not in this frame ({n_faces} other faces)"
    elif detections:
        best = max(detection.prob for detection in detections)
        status, error = Status.LOW_PROB, f"best face probability {best:.4f} < {min_prob}"
    else:
        status, error = Status.NO_FACE, "no face found"
    return empty_row(key, frame_index, status, error, n_faces)


def empty_row(key: str, frame_index: int, status: Status | str, error: str, n_faces: int = 0) -> dict:
    return {
        "key": key,
        "frame_index": frame_index,
        "track": NO_TRACK,
        "n_faces": n_faces,
        "box_source": "",
        "path": "",
        "status": Status(status).value,
        "error": error,
    }
