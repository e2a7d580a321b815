"""`ffx crop`: MTCNN face crops of every extracted frame plus faces.parquet.

Each video is one task in a worker process (on a CPU: one process per core with one torch thread
each, which measured faster than one process with many threads; on a GPU: one process). A task
detects faces on its frames in batches, follows the main face across frames, cuts the preset's
crop from the full-resolution frame and publishes the crops folder atomically, like extract.
With `boxes_from_original`, fakes reuse the boxes found on their source video (fakes are
pixel-aligned with it): a fake is queued as soon as its original is done, in the same worker pool
(both are in the same part).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ffx.errors import FfxError
from ffx.pipeline import publish, store
from ffx.pipeline.detect import DetectorSettings, resolve_device
from ffx.pipeline.distribute import Part
from ffx.pipeline.faces import PRESETS, Detection, crop_box, track_faces
from ffx.pipeline.images import encode_png, read_rgb
from ffx.pipeline.index import VIDEOS_TABLE
from ffx.pipeline.progress import stage_progress
from ffx.pipeline.schema import FACES_SCHEMA
from ffx.pipeline.statuses import NO_FRAME, NO_TRACK, Status
from ffx.pipeline.workers import Stalled, available_cores, run_tasks

STAGE = "faces"
FACES_DIR = "faces"
FRAMES_TABLE = "frames.parquet"
BOX_DETECTED, BOX_ORIGINAL = "detected", "original"


@dataclass(frozen=True)
class CropSettings:
    """Everything that shapes the crops; recorded in BUILD/faces.json."""

    preset: str = "mcx-api"
    size: int = 512
    scale: float = 1.3  # square-1.3: box side / longer face side
    min_prob: float = 0.99
    all_faces: bool = False
    boxes_from_original: bool = False
    png_level: int = 1
    detector: DetectorSettings = field(default_factory=DetectorSettings)


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
    threads: int
    batch_size: int
    original_faces: dict[int, ReusedFace] = field(default_factory=dict)


_detector_cache: dict = {}  # one detector per worker process, made on its first task


def _detector(settings: DetectorSettings, device: str, threads: int, batch_size: int):
    from ffx.pipeline.detect import FaceDetector

    cache_key = (repr(settings), device, batch_size)
    if cache_key not in _detector_cache:
        import torch

        torch.set_num_threads(threads)
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
    detector = _detector(settings.detector, task.device, task.threads, task.batch_size) if to_detect else None
    found = detector.detect_video([images[position] for position in to_detect]) if detector else []
    report(("detected", len(to_detect)))
    detections = dict(zip(to_detect, found))
    confident = [
        [d for d in detections.get(position, []) if d.prob >= settings.min_prob]
        for position in range(len(images))
    ]
    tracks = track_faces(confident)
    kept = tracks if settings.all_faces else tracks[:1]

    faces_root = build / FACES_DIR
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
            name = (
                f"{frame_index:06d}.png"
                if not settings.all_faces
                else f"{frame_index:06d}_{track_number:02d}.png"
            )
            row = _face_row(task.key, frame_index, track_number, detection, n_faces, source)
            cut = crop_box(
                settings.preset, detection.box, image.shape[1], image.shape[0], settings.size, settings.scale
            )
            if cut[2] - cut[0] < 2 or cut[3] - cut[1] < 2:
                rows.append(
                    row | {"status": Status.NO_FACE.value, "error": "the face box lies outside the frame"}
                )
                continue
            (temp / name).write_bytes(encode_png(_resize(image, cut, settings.size), settings.png_level))
            rows.append(
                row
                | dict(zip(("crop_x1", "crop_y1", "crop_x2", "crop_y2"), cut))
                | {"path": f"{FACES_DIR}/{task.key}/{name}"}
            )
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
    return _empty_row(key, frame_index, status, error, n_faces)


def _empty_row(key: str, frame_index: int, status: Status | str, error: str, n_faces: int = 0) -> dict:
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


@dataclass
class CropReport:
    """What one `ffx crop` run did."""

    videos: int  # in this part
    skipped: int  # already done before this run
    frames: dict[str, int]  # rows of this run per status (frames, or frames x tracks)
    faces: int  # crops written
    detected_frames: int  # frames that went through MTCNN
    reused_frames: int  # frames that took their boxes from the original video
    seconds: float
    merged: bool
    videos_without_faces: list[str]  # keys of videos (this run) where no frame gave a crop
    failed: list[tuple[str, str, str]]  # upstream failures: (key, status, error)

    @property
    def videos_done(self) -> int:
        return self.videos - self.skipped


def run_crop(
    build: Path,
    *,
    settings: CropSettings | None = None,
    part: Part | None = None,
    device: str = "auto",
    workers: int | None = None,
    batch_size: int | None = None,
    stall_seconds: float = 300.0,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
) -> CropReport:
    """Crop this part's unfinished videos, then merge faces.parquet once all parts are done."""
    build, part, settings = Path(build), part or Part(), settings or CropSettings()
    if settings.preset not in PRESETS:
        raise FfxError(f"unknown crop preset {settings.preset!r}; choose from {', '.join(PRESETS)}")
    if not 0 < settings.min_prob <= 1:
        raise FfxError(f"--min-prob must be in (0, 1], got {settings.min_prob}")
    videos = store.read_table(build / VIDEOS_TABLE, "`ffx index`").select(["key", "original_key"])
    frames = store.read_table(build / FRAMES_TABLE, "`ffx extract` (all parts)")
    device = resolve_device(device)
    store.record_settings(build, STAGE, _jsonable(asdict(settings)))

    original_of = {
        key: original
        for key, original in zip(videos.column("key").to_pylist(), videos.column("original_key").to_pylist())
    }
    family = {key: original_of[key] or key for key in original_of}
    keys = part.select(list(original_of), group_of=family)
    frames_of, upstream, pixels = _frames_per_video(frames)
    ledger = store.Ledger(build, STAGE, FACES_SCHEMA, sort_by=["key", "frame_index", "track"])
    done = ledger.done_keys()
    todo = [key for key in keys if key not in done]
    cores = available_cores()
    workers = workers or (1 if device.startswith("cuda") else cores)
    threads = max(1, cores // workers)
    batch_size = batch_size or (32 if device.startswith("cuda") else 8)  # measured: CPUs gain nothing above 8

    def task_for(key: str, original_faces: dict[int, ReusedFace]) -> CropTask:
        frame_list = tuple(frames_of.get(key, ()))
        return CropTask(key, frame_list, str(build), settings, device, threads, batch_size, original_faces)

    reuse = settings.boxes_from_original
    fakes = [key for key in todo if reuse and original_of[key] in family and key not in upstream]
    first = [key for key in todo if key not in fakes]
    # A fake waits for its original when that is cropped in this run; otherwise it starts at once
    # with the original's faces from the ledger (none when the original has no frames).
    cropped_now = {key for key in first if key not in upstream}
    waiting: dict[str, list[str]] = {}
    for key in fakes:
        if original_of[key] in cropped_now:
            waiting.setdefault(original_of[key], []).append(key)
    ready_fakes = [key for key in fakes if original_of[key] not in waiting]
    known_originals = {original_of[key] for key in ready_fakes}
    known = _main_faces(ledger.rows().to_pylist(), known_originals) if known_originals else {}

    def fakes_of(task: CropTask, result) -> list[CropTask]:
        rows = [] if isinstance(result, Stalled) else result[0]
        faces = _main_faces(rows, {task.key}).get(task.key, {})
        return [task_for(key, faces) for key in waiting.pop(task.key, [])]

    counts: Counter[str] = Counter()
    report = CropReport(len(keys), len(keys) - len(todo), {}, 0, 0, 0, 0.0, False, [], [])
    with (
        stage_progress("crop", len(todo), "videos", "faces", show_progress) as progress,
        ledger.writer(part, flush_seconds=flush_seconds) as writer,
    ):

        def record(key: str, rows: list[dict], detected: int) -> None:
            writer.add_item(rows)
            counts.update(row["status"] for row in rows)
            faces = sum(1 for row in rows if row["path"])
            report.faces += faces
            report.detected_frames += detected
            report.reused_frames += sum(1 for row in rows if row["box_source"] == BOX_ORIGINAL)
            if key in upstream:
                report.failed.append((key, rows[0]["status"], rows[0]["error"]))
            elif not faces:
                report.videos_without_faces.append(key)
            progress.advance(1, faces)

        for key in first:
            if key in upstream:
                record(key, [_empty_row(key, NO_FRAME, *upstream[key])], 0)
        tasks = [task_for(key, {}) for key in first if key in cropped_now]
        tasks += [task_for(key, known.get(original_of[key], {})) for key in ready_fakes]
        # The most pixels first, so the run does not end waiting on one large video.
        tasks.sort(key=lambda task: -pixels[task.key])
        for task, result in run_tasks(crop_video, tasks, workers, stall_seconds, follow_up=fakes_of):
            record(task.key, *_result_rows(task, result))
    report.seconds = progress.elapsed
    store.log_run(build, STAGE, part, report.seconds, len(todo))
    report.merged = ledger.merge_when_complete(original_of)
    report.frames = dict(counts)
    return report


def crop_settings_for(
    build: Path,
    *,
    preset: str | None = None,
    size: int | None = None,
    min_prob: float | None = None,
    detect_max_side: int = 640,
    min_face_ratio: float = 0.5,
    **options,
) -> CropSettings:
    """Crop settings from the build's recipe (`[crop]`), with the given options taking precedence."""
    from ffx.pipeline.index import MANIFEST_FILE
    from ffx.pipeline.manifest import load_manifest

    recipe = load_manifest(Path(build) / MANIFEST_FILE).crop
    return CropSettings(
        preset=preset or recipe.preset,
        size=size or recipe.size,
        min_prob=recipe.min_prob if min_prob is None else min_prob,
        detector=DetectorSettings(max_side=detect_max_side, min_face_ratio=min_face_ratio),
        **options,
    )


def _result_rows(task: CropTask, result) -> tuple[list[dict], int]:
    if isinstance(result, Stalled):
        status = Status.TIMEOUT if result.hung else Status.ERROR
        return [_empty_row(task.key, NO_FRAME, status, f"crop worker: {result.reason}")], 0
    return result


def _frames_per_video(
    frames,
) -> tuple[dict[str, list[tuple[int, str]]], dict[str, tuple[str, str]], dict[str, int]]:
    """Frames on disk per video, (status, error) of videos that have none, and pixels per video."""
    frames_of: dict[str, list[tuple[int, str]]] = {}
    upstream: dict[str, tuple[str, str]] = {}
    pixels: Counter[str] = Counter()
    names = ("key", "frame_index", "path", "status", "error", "width", "height")
    columns = [frames.column(name).to_pylist() for name in names]
    for key, frame_index, path, status, error, width, height in zip(*columns):
        if frame_index == NO_FRAME:
            upstream[key] = (status, error)
        else:
            frames_of.setdefault(key, []).append((frame_index, path))
            pixels[key] += width * height
    return frames_of, upstream, pixels


def _main_faces(rows: list[dict], originals: set[str]) -> dict[str, dict[int, ReusedFace]]:
    """The main face of each original video, per frame, from its crop rows."""
    faces: dict[str, dict[int, ReusedFace]] = {}
    for row in rows:
        if row["key"] in originals and row["track"] == 0 and row["status"] == Status.OK.value:
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            faces.setdefault(row["key"], {})[row["frame_index"]] = (
                box,
                row["prob"],
                tuple(row["landmarks"]),
                row["n_faces"],
            )
    return faces


def _jsonable(value):
    if isinstance(value, dict):
        return {name: _jsonable(item) for name, item in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    return value
