"""`ffx import-crops`: face crops made elsewhere (folders of crops, a DeepfakeBench dataset JSON)
as a build that starts at `ffx shard`.

It writes the build's tables as the stages before `ffx shard` would, so `ffx shard`, `ffx verify`,
`ffx status`, `ffx export` and the trainer run on it unchanged:

- `ffx index` with the `crops` layout (`videos.parquet`, `manifest.toml`, `index.json`): one
  "video" per folder of crops, keys, labels and splits as for any layout;
- `frames.parquet`: one row per image, the image standing for its frame: `pixels_sha256` of its
  decoded RGB pixels, `path` "" (no full frame exists), `backend` `import`;
- `faces.parquet`: one row per image: `ok` with the crop at `faces/{key}/{frame:06d}.png` (the
  image decoded and written again as ffx's RGB PNG, so JPEG and palette images become the PNG
  every shard holds) and no boxes (none are known); an image that cannot be read gets `error`
  (or `missing`) with one line naming it, and is left out of the shards.

Every row carries the `made_from` the stage's own plan computes for the build, so the tables are
current. The import is one process and redoes every image when run again. Running `ffx extract`
or `ffx crop` with other settings on such a build would look for videos that do not exist: the
crops are the build's input.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from ffx.errors import InputError
from ffx.pipeline.engine import publish, store
from ffx.pipeline.engine.builddir import STAGES, BuildDir
from ffx.pipeline.engine.identity import pixels_sha256
from ffx.pipeline.engine.stage import current_table, load_recipe, stage_for
from ffx.pipeline.engine.statuses import NO_FRAME, NO_TRACK, Status
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.recipe.layouts.crops import crop_files
from ffx.pipeline.recipe.manifest import Manifest
from ffx.pipeline.stages.index import IndexReport, run_index

BACKEND = "import"
BOX_IMPORTED = "imported"


@dataclass
class ImportReport:
    """What `ffx import-crops` wrote."""

    index: IndexReport
    videos: int = 0
    crops: int = 0
    rows_by_status: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, error)


def crops_recipe(
    source_format: str,
    json_file: str = "",
    compression: str = "c23",
    label_folders: tuple[str, ...] = ("real", "fake"),
    seed: int = 0,
) -> Manifest:
    """The recipe of an imported build: the `crops` layout, every image (`all`)."""
    layout: dict = {"kind": "crops", "format": source_format}
    if source_format == "deepfakebench":
        layout |= {"json_file": json_file, "compression": compression}
    else:
        layout["label_folders"] = list(label_folders)
    binary = source_format == "deepfakebench" or tuple(label_folders) == ("real", "fake")
    return Manifest.model_validate(
        {
            "name": f"crops-{source_format}",
            "description": "face crops imported with `ffx import-crops`",
            "sampling": "all",
            "seed": seed,
            "layout": layout,
            "labels": {"mode": "binary" if binary else "methods"},
        }
    )


def run_import(
    source: Path,
    build: Path,
    source_format: str = "folders",
    json_file: Path | None = None,
    compression: str = "c23",
    label_folders: tuple[str, ...] = ("real", "fake"),
    seed: int = 0,
) -> ImportReport:
    """Index the crops under `source` and write frames.parquet, faces.parquet and BUILD/faces/."""
    source = Path(source).resolve()
    if source_format not in ("folders", "deepfakebench"):
        raise InputError(f"unknown crops format {source_format!r}; choose folders or deepfakebench")
    listed = ""
    if source_format == "deepfakebench":
        if json_file is None:
            raise InputError("--format deepfakebench needs --json FILE (the dataset JSON)")
        try:
            listed = Path(json_file).resolve().relative_to(source).as_posix()
        except ValueError:
            raise InputError(
                f"{json_file} is not under {source}: copy the dataset JSON below the crops root"
            ) from None
    recipe = crops_recipe(source_format, listed, compression, label_folders, seed)
    where = BuildDir(build)
    index = run_index(recipe, source, where.root)
    recipe = load_recipe(where)
    files = crop_files(source, recipe.layout)
    videos = current_table(where, "videos").select(["key", "path"]).to_pylist()
    report = ImportReport(index, videos=len(videos))
    frames_rows, faces_rows = [], []
    where.faces.mkdir(parents=True, exist_ok=True)
    for video in videos:
        frames, faces = _import_video(where, source, video["key"], files[video["path"]], recipe)
        frames_rows += frames
        faces_rows += faces
    for stale in where.faces.iterdir():  # videos that left the source
        if stale.is_dir() and stale.name not in {video["key"] for video in videos}:
            shutil.rmtree(stale)
    for stage, rows in (("frames", frames_rows), ("faces", faces_rows)):
        shutil.rmtree(where.parts(stage), ignore_errors=True)  # an earlier run's chunks
        made_from = stage_for(stage).plan(where, recipe).made_from
        stamped = [row | {"made_from": made_from[row["key"]]} for row in rows]
        store.write_table(where.table(stage), pa.Table.from_pylist(stamped, schema=stage_for(stage).schema))
    for later in STAGES[STAGES.index("faces") + 1 :]:
        if where.parts(later).exists():
            shutil.rmtree(where.parts(later))
    report.rows_by_status = Counter(row["status"] for row in faces_rows)
    report.crops = report.rows_by_status[Status.OK.value]
    report.failed = [(row["key"], row["error"]) for row in faces_rows if row["status"] != Status.OK.value]
    return report


def _import_video(
    where: BuildDir, source: Path, key: str, files: list[tuple[int, str]], recipe: Manifest
) -> tuple[list[dict], list[dict]]:
    """Decode a video's images, write its crops into a temp folder published as faces/{key}."""
    publish.remove_item_temps(where.faces, key)
    temp = publish.item_temp_dir(where.faces, key, "import")
    temp.mkdir(parents=True)
    frames, faces = [], []
    for frame_index, relative in files:
        path = source / relative
        rgb, status, error = _read_image(path)
        frames.append(_frame_row(key, frame_index, rgb, status, error, len(files)))
        if rgb is None:
            faces.append(_face_row(key, frame_index, "", status, error))
            continue
        (temp / f"{frame_index:06d}.png").write_bytes(encode_png(rgb, recipe.crop.png_level))
        faces.append(_face_row(key, frame_index, f"faces/{key}/{frame_index:06d}.png", Status.OK, ""))
    got = sum(1 for row in frames if row["pixels_sha256"])
    for row in frames:
        row["frames_got"] = got
    if not got:  # nothing readable: the video's one row says why, as extract and crop write it
        first = faces[0]
        frames = [_frame_row(key, NO_FRAME, None, Status(first["status"]), first["error"], len(files))]
        faces = [_face_row(key, NO_FRAME, "", Status(first["status"]), first["error"])]
        publish.publish_dir(None, where.faces, key)
        shutil.rmtree(temp)
    else:
        publish.publish_dir(temp, where.faces, key)
    return frames, faces


def _read_image(path: Path) -> tuple[np.ndarray | None, Status, str]:
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
