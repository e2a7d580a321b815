"""What an `ffx import-crops` worker does with one folder of crop images: read each image, write it
as ffx's RGB PNG into the build's `faces/{key}/`, and give the folder's frames and faces rows.

An image stands for its frame: its frames row carries `pixels_sha256` of the decoded RGB pixels,
`path` "" (no full frame exists), backend `import`; its faces row is `ok` with the crop, its crop
window the whole image, and no detector box (none is known). An image that cannot be read gets
`error` (or `missing`) with one line naming it.

From a DeepfakeBench dataset (`dfb_resolution` set), what lies where its loader looks is kept: the
landmarks (`frames` -> `landmarks` in the path, `.npy`, in the pixels of the image resized to its
`resolution`) go into `dense_landmarks` in the image's own pixels, and the mask (`frames` ->
`masks`) beside the crop as `{frame}.mask.png`. Cheap to import, like every worker module.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffx.pipeline.engine import publish
from ffx.pipeline.engine.builddir import crop_file
from ffx.pipeline.engine.identity import crop_made_from, frames_identity, pixels_sha256
from ffx.pipeline.engine.statuses import NO_FRAME, NO_TRACK, Status
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.workers.extract import Extracted

BACKEND = "import"
BOX_IMPORTED = "imported"


@dataclass(frozen=True)
class ImportTask:
    """One folder of crops: its images (frame index, path below `source`) and where they go."""

    key: str
    source: str  # the crops root
    files: tuple[tuple[int, str], ...]
    build: str
    png_level: int
    crop_settings: dict  # the build's `[crop]` settings, which the crop rows' `made_from` digests
    dfb_resolution: int = 0  # a DeepfakeBench dataset's `resolution` (its landmarks'); 0: not one
    png_encoder: str = "opencv"  # the recipe's `png_encoder`


def import_folder(task: ImportTask, report) -> Extracted:
    """Decode a folder's images and publish them as faces/{key}; the frames rows, and the faces
    rows with the `made_from` that `ffx crop`'s plan gives them."""
    faces_root = Path(task.build) / "faces"
    publish.remove_item_temps(faces_root, task.key)
    temp = publish.item_temp_dir(faces_root, task.key, "import")
    temp.mkdir(parents=True)
    frames, faces = [], []
    for frame_index, relative in task.files:
        report(("import", frame_index))
        rgb, status, error = read_image(Path(task.source) / relative)
        frames.append(_frame_row(task.key, frame_index, rgb, status, error, len(task.files)))
        if rgb is None:
            faces.append(_face_row(task.key, frame_index, "", status, error))
            continue
        path = crop_file(task.key, frame_index, 0, False)
        (temp / Path(path).name).write_bytes(encode_png(rgb, task.png_level, task.png_encoder))
        row = _face_row(task.key, frame_index, path, Status.OK, "")
        height, width = rgb.shape[:2]
        row |= {"crop_x1": 0, "crop_y1": 0, "crop_x2": width, "crop_y2": height}
        if task.dfb_resolution:
            row |= _dfb_companions(Path(task.source), relative, (width, height), task, temp, path)
        faces.append(row)
    got = sum(1 for row in frames if row["pixels_sha256"])
    for row in frames:
        row["frames_got"] = got
    if not got:  # nothing readable: the folder's one row says why, as extract and crop write it
        first = faces[0] if faces else {"status": Status.MISSING.value, "error": f"{task.source}: no images"}
        status = Status(first["status"])
        frames = [_frame_row(task.key, NO_FRAME, None, status, first["error"], len(task.files))]
        faces = [_face_row(task.key, NO_FRAME, "", status, first["error"])]
        publish.publish_dir(None, faces_root, task.key)
        shutil.rmtree(temp)
    else:
        publish.publish_dir(temp, faces_root, task.key)
    made_from = crop_made_from(task.crop_settings, frames_identity(frames), None)
    return Extracted(frames, [row | {"made_from": made_from} for row in faces])


def _dfb_companions(source: Path, relative: str, size: tuple[int, int], task, temp: Path, path: str) -> dict:
    """The landmarks and mask DeepfakeBench keeps for a frame (found as its loader finds them:
    every `frames` in the path replaced), as faces-row fields; {} for those absent."""
    found: dict = {}
    landmarks = source / relative.replace("frames", "landmarks").replace(".png", ".npy")
    if landmarks.is_file():
        points = np.load(landmarks).astype(np.float64).reshape(-1, 2)
        scale = np.array(size, np.float64) / task.dfb_resolution  # back to the image's own pixels
        found["dense_landmarks"] = ((points + 0.5) * scale - 0.5).reshape(-1).tolist()
    mask = source / relative.replace("frames", "masks")
    if mask.is_file():
        grey = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        if grey is not None:
            mask_path = path.replace(".png", ".mask.png")
            (temp / Path(mask_path).name).write_bytes(encode_png(grey, task.png_level, task.png_encoder))
            found["mask_path"] = mask_path
    return found


def read_image(path: Path) -> tuple[np.ndarray | None, Status, str]:
    """An image as RGB uint8, or why not (one line naming the file)."""
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except FileNotFoundError:
        return None, Status.MISSING, f"{path} not found"
    except OSError as error:
        return None, Status.ERROR, f"{path}: {error.strerror}"
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        return None, Status.ERROR, f"{path} is not a readable image"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), Status.OK, ""


def _frame_row(
    key: str, frame_index: int, rgb: np.ndarray | None, status: Status, error: str, images: int
) -> dict:
    height, width = rgb.shape[:2] if rgb is not None else (0, 0)
    return {
        "key": key,
        "frame_index": frame_index,
        "timestamp": None,
        "width": width,
        "height": height,
        "path": "",
        "pixels_sha256": pixels_sha256(rgb) if rgb is not None else "",
        "status": status.value,
        "error": error,
        "backend": BACKEND,
        "frames_asked": -1,
        "frames_got": 0,
        "video_frames": images,
        "fps": 0.0,
        "codec": "",
        "rotation": 0,
    }


def _face_row(key: str, frame_index: int, path: str, status: Status, error: str) -> dict:
    ok = status == Status.OK
    return {
        "key": key,
        "frame_index": frame_index,
        "track": 0 if ok else NO_TRACK,
        "n_faces": 1 if ok else 0,
        "box_source": BOX_IMPORTED if ok else "",
        "path": path,
        "mask_path": "",
        "status": status.value,
        "error": error,
    }
