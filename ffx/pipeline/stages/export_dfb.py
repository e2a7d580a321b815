"""`ffx export --format deepfakebench`: a build's main-face crops as DeepfakeBench's dataset JSON.

Written against DeepfakeBench's main branch at commit 8a4a7bf5e966c5c5618bc27d1719c3683eae9a04
(`training/dataset/abstract_dataset.py`, `preprocessing/rearrange.py`, `training/config/*.yaml`).
What its loader does, and what the export does about it:

- It opens `{dataset_json_folder}/{name}.json` and walks `info[name][label][mode]`, mode `train`
  or `test` (`val` is written too, as `rearrange.py` does); for the FF++ family
  (`FaceForensics++`, `FF-DF`, `FF-F2F`, `FF-FS`, `FF-NT`, `DeepFakeDetection`, `FaceShifter`)
  one more level, the compression (`config['compression']`); for every other name none.
- Each video is `{label, frames}`; `config['label_dict'][label]` gives the class; frames are
  sorted by `int(file stem)`, so crops are named `{frame_index:03d}.png`.
- `load_rgb` uses a path as it is when it starts with `.`, else it prefixes `./{rgb_dir}\\`, a
  backslash that on Linux becomes part of a file name. So the JSON holds paths that start with
  `./`, relative to the folder DeepfakeBench runs from (`--dfb-root`, default the current
  directory), and `rgb_dir` is not used. The crops are a symbolic-link tree (`--copy`: copies)
  `OUT/{name}/frames/{key}/{frame:03d}.png`: landmarks and masks are looked for by replacing
  `frames` in the path with `landmarks` (`.npy`) or `masks`, so they go to
  `OUT/{name}/landmarks/...` and `OUT/{name}/masks/...` when the build has them.
- `lmdb: false` (the JSON paths are files, not LMDB keys).
- Its loader resizes each image to `resolution` (256 in its configs) and leaves the landmarks as
  written, and with augmentation (albumentations) refuses a keypoint outside the image. So
  landmarks (`ffx crop --landmarks`, faces.parquet `dense_landmarks`, full-frame pixels) are
  written in the pixels of the image it uses (`--dfb-resolution`, written into the config as
  `resolution`), pixel centres kept, clipped into it: `(N, 2)` float32 `.npy`. DeepfakeBench's own
  are 81 points from its preprocessing (`load_landmark` falls back to zeros of (81, 2) when a file
  is missing). Masks are images it resizes itself.
- Its config keys must go into `train_config.yaml` and `test_config.yaml`: they override a
  detector's yaml (a dataset set only there is "not exist").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import load_recipe
from ffx.pipeline.media.landmarks import face_crop_landmarks
from ffx.pipeline.recipe.schema import SPLITS, is_real_name
from ffx.pipeline.stages.export_files import inside, link_crops

COMMIT = "8a4a7bf5e966c5c5618bc27d1719c3683eae9a04"
# Datasets whose JSON has a compression level under each split (abstract_dataset.py).
FFPP_FAMILY = ("FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceForensics++", "DeepFakeDetection", "FaceShifter")
# FF++ methods -> DeepfakeBench's label names (rearrange.py's ff_dict).
FFPP_LABELS = {
    "Deepfakes": "FF-DF",
    "Face2Face": "FF-F2F",
    "FaceSwap": "FF-FS",
    "NeuralTextures": "FF-NT",
    "FaceShifter": "FF-FH",
    "DeepFakeDetection": "DFD_fake",
}
# Per-method files rearrange.py writes beside FaceForensics++.json: {method: {FF-real, method}}.
FFPP_METHOD_FILES = ("FF-DF", "FF-F2F", "FF-FS", "FF-NT")
# faces.parquet (`ffx crop --landmarks`): the shape model's points in full-frame pixels.
LANDMARKS_COLUMN = "dense_landmarks"


def dataset_name(recipe) -> str:
    """The name DeepfakeBench knows the build's dataset by (its label_dict has their labels)."""
    layout = recipe.layout
    if layout.kind == "ffpp":
        return "FaceForensics++"
    if layout.kind == "celebdf":
        return f"Celeb-DF-{layout.version}"
    if layout.kind == "dfdc":
        return "DFDC"
    return f"ffx-{recipe.name}"


def dfb_label(name: str, recipe, video: dict) -> str:
    """A video's DeepfakeBench label name (a key of its `label_dict`)."""
    real = is_real_name(video["label_name"]) or video["method"] == "original"
    if name == "FaceForensics++":
        if real:
            return "DFD_real" if "/actors/" in f"/{video['path']}" else "FF-real"
        return FFPP_LABELS.get(video["method"], f"FF-{video['method']}")
    if name.startswith("Celeb-DF-"):
        version = name.rsplit("-", 1)[1]
        return f"CelebDF{version}_{'real' if real else 'fake'}"
    if name == "DFDC":
        return "DFDC_Real" if real else "DFDC_Fake"
    return f"{name}_{'real' if real else 'fake'}"


def export_deepfakebench(
    where: BuildDir,
    videos: dict[str, dict],
    crops_of: dict[str, list[dict]],
    out: Path,
    copy: bool,
    dfb_root: Path | None,
    report,
    resolution: int = 256,
):
    """Write OUT/dataset_json/{name}.json, the crop tree and OUT/deepfakebench.yaml; fills `report`."""
    recipe = load_recipe(where)
    name = dataset_name(recipe)
    out = Path(out).resolve()
    base = Path(dfb_root or os.getcwd()).resolve()
    compression = recipe.layout.compression if name in FFPP_FAMILY else None
    landmarks = _landmarks(where, recipe.crop.size, resolution)
    tree: dict[str, dict] = {}
    labels: dict[str, int] = {}
    most_frames = 0
    for key in sorted(crops_of):
        video = videos[key]
        crops = sorted(
            (row for row in crops_of[key] if row["track"] == 0), key=lambda row: row["frame_index"]
        )
        if not crops:
            continue
        label = dfb_label(name, recipe, video)
        labels[label] = 0 if label.lower().endswith("real") else 1
        folder = inside(out, name, "frames", key)
        link_crops(where.root, folder, key, crops, copy, name=lambda row: f"{row['frame_index']:03d}")
        frames = ["./" + os.path.relpath(folder / f"{row['frame_index']:03d}.png", base) for row in crops]
        if landmarks:
            _write_landmarks(inside(out, name, "landmarks", key), crops, landmarks)
        masks = [row for row in crops if row.get("mask_path")]
        if masks:  # DeepfakeBench reads a crop's mask at its path with frames -> masks
            link_crops(
                where.root,
                inside(out, name, "masks", key),
                key,
                [row | {"path": row["mask_path"]} for row in masks],
                copy,
                name=lambda row: f"{row['frame_index']:03d}",
            )
        per_split = tree.setdefault(label, {split: {} for split in SPLITS})
        videos_of = per_split[video["split"]]
        if compression is not None:
            videos_of = videos_of.setdefault(compression, {})
        videos_of[key] = {"label": label, "frames": frames}
        most_frames = max(most_frames, len(frames))
        report.crops[video["split"]] = report.crops.get(video["split"], 0) + len(frames)
        report.videos[video["split"]] = report.videos.get(video["split"], 0) + 1
    if compression is not None:  # every label has the level under each split, empty or not
        for per_split in tree.values():
            for split in SPLITS:
                per_split[split].setdefault(compression, {})
    json_folder = inside(out, "dataset_json")
    atomic.write_json(json_folder / f"{name}.json", {name: tree})
    files = [name]
    if name == "FaceForensics++" and "FF-real" in tree:
        for method in FFPP_METHOD_FILES:
            if method in tree:
                pair = {"FF-real": tree["FF-real"], method: tree[method]}
                atomic.write_json(json_folder / f"{method}.json", {method: pair})
                files.append(method)
    if any("frames" in part for part in Path(os.path.relpath(out, base)).parts):
        report.notes.append(
            f"the path from {base} to {out} holds 'frames': DeepfakeBench finds landmarks and masks by "
            "replacing every 'frames' in a frame's path, so with_landmark/with_mask would miss them"
        )
    if not landmarks:
        report.notes.append(
            f"faces.parquet has no {LANDMARKS_COLUMN} column: no landmark files written "
            "(keep with_landmark: false and with_mask: false)"
        )
    masked = any(row.get("mask_path") for crops in crops_of.values() for row in crops)
    image = (resolution, bool(landmarks), masked)
    report.config = _config(json_folder, base, name, files, compression, labels, most_frames, image)
    atomic.write_bytes(out / "deepfakebench.yaml", report.config.encode())
    return report


def _landmarks(where: BuildDir, size: int, resolution: int) -> dict[tuple[str, int], np.ndarray]:
    """(key, frame) -> the main face's landmarks in the pixels of the crop resized to
    `resolution` (pixel centres kept), clipped into it, when faces.parquet has them."""
    import pyarrow.parquet as pq

    if LANDMARKS_COLUMN not in pq.read_schema(where.table("faces")).names:
        return {}
    found = {}
    for row in pq.read_table(where.table("faces")).to_pylist():
        points = face_crop_landmarks(row, size) if row["track"] == 0 else None
        if points is not None:
            resized = (np.asarray(points, np.float64) + 0.5) * resolution / size - 0.5
            found[(row["key"], row["frame_index"])] = np.clip(resized, 0, resolution - 1)
    return found


def _write_landmarks(folder: Path, crops: list[dict], landmarks: dict) -> None:
    """One `{frame:03d}.npy` per crop: an (N, 2) float32 array of x, y in crop pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in crops:
        points = landmarks.get((row["key"], row["frame_index"]))
        if points is None:
            continue
        array = np.asarray(points, np.float32)
        with atomic.atomic_path(folder / f"{row['frame_index']:03d}.npy") as temp, open(temp, "wb") as file:
            np.save(file, array)


def _config(
    json_folder: Path,
    base: Path,
    name: str,
    files: list[str],
    compression: str | None,
    labels: dict[str, int],
    most_frames: int,
    image: tuple[int, bool, bool],
) -> str:
    """The DeepfakeBench config lines to set (YAML; strings written as JSON, which YAML reads);
    `image`: the resolution the landmarks are written for, and whether landmarks and masks are."""
    resolution, landmarks, masks = image
    lines = [
        f"# DeepfakeBench ({COMMIT[:12]}): set these in training/config/train_config.yaml and",
        "# test_config.yaml (they override a detector's yaml), and run DeepfakeBench from:",
        f"#   {base}",
        f"# (the frame paths in the JSON start with ./ and are relative to it). Datasets: {', '.join(files)}",
        "lmdb: false",
        f"dataset_json_folder: {json.dumps(str(json_folder))}",
        f"train_dataset: [{json.dumps(name)}]",
        f"test_dataset: [{json.dumps(name)}]",
    ]
    if compression is not None:
        lines.append(f"compression: {compression}")
    # With fewer than a video's frames the loader keeps only its first frame_num frames.
    lines.append(f"frame_num: {{'train': {most_frames}, 'test': {most_frames}}}")
    lines.append(f"resolution: {resolution}  # the landmarks are in the pixels of the image resized to it")
    lines += [f"with_landmark: {str(landmarks).lower()}", f"with_mask: {str(masks).lower()}"]
    lines.append("label_dict:")
    lines += [f"  {json.dumps(label)}: {value}" for label, value in sorted(labels.items())]
    return "\n".join(lines) + "\n"
