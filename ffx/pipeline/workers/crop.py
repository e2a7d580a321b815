"""The worker side of `ffx crop`: detect, track and crop the faces of one video's frames.

`crop_faces` is the one cropping path: `ffx crop` feeds it frames read from their PNGs (or decoded
again when the build keeps no frames), `ffx build` the frames it has just decoded (workers/extract.py).
It imports no pyarrow or pydantic (and torch only when a video needs detection), so a worker
starts quickly; `ffx.pipeline.stages.crop` runs the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffx.pipeline.engine import atomic, publish
from ffx.pipeline.engine.builddir import BuildDir, crop_file
from ffx.pipeline.engine.identity import pixels_sha256
from ffx.pipeline.engine.statuses import NO_TRACK, BadInput, Status
from ffx.pipeline.media.detect import DetectorSettings
from ffx.pipeline.media.faces import BOX_TRACK, Detection, crop_box, select_faces
from ffx.pipeline.media.images import encode_png, read_rgb
from ffx.pipeline.media.landmarks import aligned_crop, aligned_matrix, crop_points, hull_mask
from ffx.pipeline.workers.shard import CROP_BOX, SampleTask, as_stored, face_crop, write_premade

BOX_DETECTED, BOX_ORIGINAL = "detected", "original"
ALIGNED = "aligned"  # the preset whose crop is a similarity warp, not a box (`crop_matrix`)


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
    track_min_prob: float | None = None  # a track continues through faces this probable
    landmarks_model: str = ""  # the dlib shape model file; "" for no dense landmarks
    mask: bool = False  # a convex-hull mask of the landmarks beside each crop
    png_encoder: str = "opencv"  # the recipe's `png_encoder`

    def png(self, pixels: np.ndarray) -> bytes:
        """A crop's (or mask's) PNG bytes."""
        return encode_png(pixels, self.png_level, self.png_encoder)


# A reused face: box, prob, landmarks (10 values) and the original frame's face count.
ReusedFace = tuple[tuple[float, ...], float, tuple[float, ...], int]


@dataclass(frozen=True)
class CropJob:
    """How to crop one video's faces, wherever its frames come from: the settings, their digest
    inputs, and for a fake that reuses boxes, its original's faces."""

    settings: CropSettings
    recipe: dict  # the `[crop]` settings as they enter `made_from`
    device: str
    batch_size: int
    original: str | None = None  # the original's frames identity, "detected", or None (no original)
    original_faces: dict[int, ReusedFace] = field(default_factory=dict)
    # `ffx build`'s pass: how the video's samples are made, to make them from the crops' pixels.
    samples: SampleTask | None = None


@dataclass(frozen=True)
class CropTask:
    """One video for a `ffx crop` worker: its frames (PNGs on disk, or decoded again from the video
    when the build keeps no frames) and how to crop them."""

    key: str
    # (frame_index, PNG path relative to the build or "", sha256 of the decoded pixels)
    frames: tuple[tuple[int, str, str], ...]
    build: str
    job: CropJob
    video: str = ""  # the video file, decoded again when the frames have no PNG
    backend: str = ""  # the decoder that produced the frames


_detector_cache: dict = {}  # one detector per worker process, made on its first task
_predictor_cache: dict = {}  # one landmark predictor per worker process (the model loads in ~1 s)


def _predictor(path: str):
    from ffx.pipeline.media.landmarks import LandmarkPredictor

    if path not in _predictor_cache:
        _predictor_cache.clear()
        _predictor_cache[path] = LandmarkPredictor(path)
    return _predictor_cache[path]


def mask_file(crop_path: str) -> str:
    """A crop's mask PNG, beside it: `faces/{key}/{frame:06d}.mask.png`."""
    return crop_path.removesuffix(".png") + ".mask.png"


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
    """Worker entry point of `ffx crop`: rows for every frame of one video and how many frames
    were detected."""
    build = Path(task.build)
    stored = [frame for frame in task.frames if frame[1]]
    if len(stored) == len(task.frames):
        images = []
        for frame_index, path, sha256 in task.frames:
            images.append(read_rgb(build / path))
            if sha256 and pixels_sha256(images[-1]) != sha256:
                raise BadInput(
                    f"{build / path} no longer holds the frame extracted (its pixels changed): delete it "
                    f"and run `ffx extract {build}`",
                    Status.ERROR,
                )
            report(("loaded", frame_index))
    else:
        images, mismatch = _decode_again(task, report)
        if mismatch:
            publish.publish_dir(None, BuildDir(build).faces, task.key)  # no crop of other pixels stays
            return [
                empty_row(task.key, frame_index, Status.DECODE_MISMATCH, mismatch)
                for frame_index, *_ in task.frames
            ], 0
    frame_indices = [frame_index for frame_index, *_ in task.frames]
    return crop_faces(task.key, frame_indices, images, task.job, BuildDir(build).faces, report)


def _decode_again(task: CropTask, report) -> tuple[list[np.ndarray], str]:
    """The video's frames decoded again with the decoder that extracted them, each checked against
    its recorded hash; ([], why) when one differs (a decoder upgrade, a re-encoded file)."""
    from ffx.pipeline.media.decode import BACKENDS
    from ffx.pipeline.media.sampling import FramePlan

    source = Path(task.video)
    if not source.is_file():
        raise BadInput(f"{source} not found: the build keeps no frames, so crop decodes the video again")
    wanted = {frame_index: sha256 for frame_index, _path, sha256 in task.frames}
    plan = FramePlan(frozenset(wanted), max(wanted), len(wanted))
    # Extract's made_from is the file's path and size, so only a recipe change redoes it here.
    rebuild = (
        "extract the build again with `ffx build --keep-frames` (every video, this decoder, frames kept)"
    )
    images: dict[int, np.ndarray] = {}
    try:
        for frame in BACKENDS[task.backend](source, plan, 1):
            if pixels_sha256(frame.rgb) != wanted[frame.frame_index]:
                return (
                    [],
                    f"frame {frame.frame_index} decodes to other pixels than at extract "
                    f"(was the decoder upgraded?): {rebuild}",
                )
            images[frame.frame_index] = frame.rgb
            report(("decoded", frame.frame_index))
    except Exception as error:  # decoders raise assorted types; all mean "this file broke here"
        return [], f"{task.backend} no longer decodes the video ({error or type(error).__name__}): {rebuild}"
    if lost := sorted(set(wanted) - set(images)):
        return [], f"frame {lost[0]} no longer decodes ({task.backend}): {rebuild}"
    return [images[frame_index] for frame_index in wanted], ""


def crop_faces(
    key: str, frame_indices: list[int], images: list[np.ndarray], job: CropJob, faces_root: Path, report
) -> tuple[list[dict], int]:
    """Detect, track and crop the faces of one video's frames, publish its crops folder under
    `faces_root` and return its rows and how many frames were detected (the others reuse boxes)."""
    settings = job.settings
    reused = {
        position: job.original_faces.get(frame_index) for position, frame_index in enumerate(frame_indices)
    }
    to_detect = [position for position, face in reused.items() if face is None]
    report(("detecting", len(to_detect)))
    detector = _detector(settings.detector, job.device, job.batch_size) if to_detect else None
    found = (
        detector.detect_video(
            [images[position] for position in to_detect], lambda done: report(("detecting", done))
        )
        if detector
        else []
    )
    report(("detected", len(to_detect)))
    predictor = _predictor(settings.landmarks_model) if settings.landmarks_model else None
    detections = dict(zip(to_detect, found))
    every = [detections.get(position, []) for position in range(len(images))]
    confident = [[d for d in found if d.prob >= settings.min_prob] for found in every]
    tracks, continued = select_faces(every, settings.min_prob, settings.track_min_prob)
    kept = tracks if settings.all_faces else tracks[:1]

    publish.remove_item_temps(faces_root, key)
    temp = publish.item_temp_dir(faces_root, key, "crop")
    temp.mkdir(parents=True)
    rows = []
    made: list[tuple] = []  # each crop's row, PNG, pixels and mask PNG, for its sample
    for position, frame_index in enumerate(frame_indices):
        image = images[position]
        faces, n_faces = _frame_faces(position, reused[position], confident, continued, kept)
        if not faces:
            rows.append(
                _faceless_row(key, frame_index, detections.get(position, []), n_faces, settings.min_prob)
            )
            continue
        for track_number, detection, source in faces:
            path = crop_file(key, frame_index, track_number, settings.all_faces)
            row = _face_row(key, frame_index, track_number, detection, n_faces, source)
            pixels, cut, matrix = _cut(image, detection, settings)
            if matrix is not None:
                row["crop_matrix"] = [float(value) for value in matrix.reshape(-1)]
            if pixels is None:
                rows.append(
                    row | {"status": Status.NO_FACE.value, "error": "the face box lies outside the frame"}
                )
                continue
            png, mask_png = settings.png(pixels), None
            atomic.write_file(temp / Path(path).name, png)
            if predictor is not None:
                points = predictor.predict(image, detection.box)  # on the full frame, MTCNN's box
                row["dense_landmarks"] = [float(value) for value in points.reshape(-1)]
                if settings.mask:
                    mask_png = settings.png(
                        hull_mask(crop_points(points, cut, settings.size, matrix), settings.size)
                    )
                    atomic.write_file(temp / Path(mask_file(path)).name, mask_png)
                    row["mask_path"] = mask_file(path)
            rows.append(row | dict(zip(CROP_BOX, cut)) | {"path": path})
            made.append((rows[-1], png, pixels, mask_png))
    publish.publish_dir(temp if any(row["path"] for row in rows) else None, faces_root, key)
    publish.remove_item_temps(faces_root, key)
    if job.samples is not None and made:  # `ffx build`'s pass: the samples too, from these pixels
        write_premade(
            job.samples, [(face_crop(as_stored(row)), png, pixels, mask) for row, png, pixels, mask in made]
        )
    return rows, len(to_detect)


def _cut(image: np.ndarray, detection: Detection, settings: CropSettings):
    """A face's crop pixels (None when its box lies outside the frame), the frame box they are
    cut from, and the aligned preset's matrix (None for the box presets)."""
    if settings.preset == ALIGNED:
        matrix = aligned_matrix(detection.landmarks, settings.size)
        pixels, cut = aligned_crop(image, matrix, settings.size)
    else:
        height, width = image.shape[:2]
        cut = crop_box(settings.preset, detection.box, width, height, settings.size, settings.scale)
        matrix, pixels = None, None
    if cut[2] - cut[0] < 2 or cut[3] - cut[1] < 2:
        return None, cut, matrix
    return (pixels if pixels is not None else _resize(image, cut, settings.size)), cut, matrix


def _frame_faces(position: int, reused, confident, continued, kept) -> tuple[list[tuple], int]:
    """The faces to crop in one frame as (track number, detection, box source), and how many faces
    the frame holds: its original's face when boxes are reused, else the tracks seen in it."""
    if reused is not None:
        box, prob, landmarks, n_faces = reused
        return [
            (0, Detection(np.asarray(box), prob, np.asarray(landmarks).reshape(5, 2)), BOX_ORIGINAL)
        ], n_faces
    # Faces in the frame: the confident ones and those kept as continuations of a track.
    n_faces = len(confident[position]) + sum(1 for at, _ in continued if at == position)
    faces = [
        (number, track.detections[position], BOX_TRACK if (position, number) in continued else BOX_DETECTED)
        for number, track in enumerate(kept)
        if position in track.detections
    ]
    return faces, n_faces


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
        "dense_landmarks": None,
        "crop_matrix": None,
        "n_faces": n_faces,
        "box_source": source,
        "path": "",
        "mask_path": "",
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
        "mask_path": "",
        "status": Status(status).value,
        "error": error,
    }
