"""What `ffx predict` reads: videos and images as given, each turned into face crops by the build's
own code in a worker process.

A video goes through `extract_video` with a crop job: the one pass of `ffx build` (decode, hash,
detect, track, crop). An image goes through `crop_faces` as a one-frame video. Like the stages'
worker modules, this one imports no torch at start (only once a detection runs), so a worker
starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffx.errors import FfxError
from ffx.pipeline.engine.statuses import BadInput, Status
from ffx.pipeline.media.images import read_rgb
from ffx.pipeline.recipe.layouts.base import VIDEO_EXTENSIONS
from ffx.pipeline.recipe.schema import key_from_path
from ffx.pipeline.workers.crop import CropJob, crop_faces
from ffx.pipeline.workers.extract import Extracted, VideoTask, extract_video, rows_without_frames

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
IMAGE, VIDEO = "image", "video"


@dataclass(frozen=True)
class Input:
    """One file to score: a key unique among the inputs (safe for file names), and its kind."""

    key: str
    path: Path
    kind: str  # image | video


@dataclass(frozen=True)
class ImageTask:
    """One image for a worker: where its crops go and how to crop them."""

    key: str
    source: str
    faces_root: str
    crop: CropJob


def find_inputs(paths: list[Path]) -> list[Input]:
    """Files given and the videos and images under folders given, in order (a folder's files
    sorted); a file of another type given by name is read as a video (its row says if it is
    none). A path that does not exist is an error naming it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            wanted = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
            # Links too, dangling ones included: their row says `missing` (nothing skipped silently).
            found = sorted(
                entry
                for entry in path.rglob("*")
                if (entry.is_file() or entry.is_symlink()) and entry.suffix.lower() in wanted
            )
            if not found:
                raise FfxError(f"{path}: no video or image in this folder ({', '.join(wanted)})")
            files += found
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise FfxError(f"{path} not found")
    inputs, taken = [], set()
    for file in dict.fromkeys(files):  # a file given twice is scored once
        key = key_from_path(file.name)
        number = 2
        base = key
        while key in taken:  # same names in different folders
            key, number = f"{base}-{number}", number + 1
        taken.add(key)
        kind = IMAGE if file.suffix.lower() in IMAGE_EXTENSIONS else VIDEO
        inputs.append(Input(key, file, kind))
    return inputs


def prepare(task: VideoTask | ImageTask, report) -> Extracted:
    """Worker entry point: an input's frames rows and crop rows (crops under its faces root)."""
    if isinstance(task, VideoTask):
        return extract_video(task, report)
    try:
        image = read_rgb(Path(task.source))
    except BadInput as bad:
        return Extracted(rows_without_frames(task.key, bad.status, str(bad)), [])
    if image.ndim != 3 or min(image.shape[:2]) < 2:
        return Extracted(rows_without_frames(task.key, Status.DECODE_ERROR, "an empty image"), [])
    height, width = image.shape[:2]
    frame = {"key": task.key, "frame_index": 0, "width": width, "height": height, "status": "ok", "error": ""}
    faces, detected = crop_faces(task.key, [0], [image], task.crop, Path(task.faces_root), report)
    return Extracted([frame], faces, detected)
