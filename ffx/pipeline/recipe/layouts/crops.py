"""Face crops without their videos: each "video" is a folder of crop images.

- `folders`: `ROOT/[train|val|test/]LABEL/.../VIDEO/*.png|jpg|...`, LABEL one of the layout's
  `label_folders`; a top-level split folder gives the split (else the seeded group split).
- `deepfakebench`: a DeepfakeBench dataset JSON (`json_file`, under the root):
  `name -> label -> train|val|test -> [compression ->] video -> {label, frames}`; frame paths
  (backslashes read as slashes) relative to the root or absolute below it; a label name ending
  in `real` (any case) is real, every other fake, and becomes the video's method. A video listed
  under val and test with one label (DeepfakeBench lists Celeb-DF's test videos under val too)
  goes to test; listed under two labels, or under train and another split, it is refused in one
  line naming both entries (merging them would drop one silently).

A video's frame index is its file's integer stem (`012.png` is frame 12) when every stem is an
integer and they are distinct, else its position in name order. `ffx import-crops` reads the
images; this module only finds them (`crop_files`) and gives `ffx index` its entries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import Entry, Scan, inside_root, list_file_under, require_dir
from ffx.pipeline.recipe.manifest import CropsLayout

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")
LABEL_NAMES = {"real": 0, "fake": 1}


def scan(root: Path, layout: CropsLayout, splits_dir: Path | None) -> Scan:
    """One entry per folder of crops. A DeepfakeBench JSON's video names are kept as the keys
    where they are distinct (an ffx export's are its keys), and its dataset name as the dataset."""
    require_dir(root, "crops root")
    videos, notes = crop_videos(root, layout)
    names = [video.get("name") for video in videos.values()]
    keep_names = all(names) and len(set(names)) == len(names)
    entries = [
        Entry(
            path,
            video["method"],
            video["label_name"],
            split=video["split"],
            identities=(f"video:{path}",),
            key=video.get("name") if keep_names else None,
        )
        for path, video in sorted(videos.items())
    ]
    dataset = next((video["dataset"] for video in videos.values() if video.get("dataset")), None)
    labels = (
        {name: index for index, name in enumerate(layout.label_folders)}
        if layout.format == "folders"
        else dict(LABEL_NAMES)
    )
    return Scan(dataset or f"crops-{layout.format}", entries, labels, notes)


def crop_files(root: Path, layout: CropsLayout) -> dict[str, list[tuple[int, str]]]:
    """Each video folder (relative to the root) -> its (frame index, image path relative to the
    root) in frame order."""
    videos, _notes = crop_videos(root, layout)
    return {path: video["frames"] for path, video in videos.items()}


def crop_videos(root: Path, layout: CropsLayout) -> tuple[dict[str, dict], list[str]]:
    """Video folder -> {label_name, method, split, frames}, and notes for the user."""
    found = _from_json(root, layout) if layout.format == "deepfakebench" else _from_folders(root, layout)
    notes, renumbered = [], 0
    for video in found.values():
        video["frames"], by_position = frame_indices(video.pop("files"))
        renumbered += by_position
    if renumbered:
        notes.append(
            f"{renumbered} videos have image names that are not distinct integers: numbered in name order"
        )
    return found, notes


def frame_indices(files: list[str]) -> tuple[list[tuple[int, str]], bool]:
    """(frame index, file) in frame order; True when the index is the position in name order."""
    stems = [PurePosixPath(file).stem for file in files]
    if all(stem.isdigit() for stem in stems) and len({int(stem) for stem in stems}) == len(stems):
        return sorted(zip((int(stem) for stem in stems), files)), False
    return list(enumerate(sorted(files))), True


def _from_folders(root: Path, layout: CropsLayout) -> dict[str, dict]:
    labels = set(layout.label_folders)
    found: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        images = [
            name for name in filenames if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
        if not images:
            continue
        relative = Path(dirpath).relative_to(root).as_posix()
        parts = relative.split("/") if relative != "." else []
        split = SPLIT_FOLDERS.get(parts[0]) if parts else None
        rest = parts[1:] if split else parts
        if len(rest) < 2 or rest[0] not in labels:
            raise InputError(
                f"{dirpath}: crops must sit in a video folder under one of {', '.join(sorted(labels))}/ "
                "(optionally inside train/, val/ or test/)"
            )
        found[relative] = {
            "label_name": rest[0],
            "method": rest[0],
            "split": split,
            "files": [f"{relative}/{name}" for name in images],
        }
    return found


def _from_json(root: Path, layout: CropsLayout) -> dict[str, dict]:
    if not layout.json_file:
        raise InputError("layout.json_file is not set: give the DeepfakeBench dataset JSON (--json FILE)")
    path = list_file_under(root, layout.json_file, "layout.json_file")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a readable DeepfakeBench dataset JSON ({error})") from None
    if not isinstance(info, dict) or len(info) != 1 or not isinstance(next(iter(info.values())), dict):
        raise InputError(f"{path}: expected {{dataset name: {{label: {{train|val|test: ...}}}}}}")
    found: dict[str, dict] = {}
    dataset = next(iter(info))
    for label, splits in next(iter(info.values())).items():
        for split in SPLIT_ORDER:
            videos = _videos_of(path, label, split, (splits or {}).get(split, {}), layout.compression)
            for name, video in videos.items():
                origin = f"{path}: {label}/{split}/{name}"
                frames = video.get("frames") if isinstance(video, dict) else None
                if not isinstance(frames, list) or not frames:
                    raise InputError(f"{origin}: no frames listed")
                files = [_under_root(root, str(frame), origin) for frame in frames]
                folder = PurePosixPath(files[0]).parent.as_posix()
                if any(PurePosixPath(file).parent.as_posix() != folder for file in files):
                    raise InputError(f"{origin}: frames in more than one folder")
                kind = "real" if str(video.get("label", label)).lower().endswith("real") else "fake"
                _check_listed_once(found.get(folder), label, split, origin, folder)
                found[folder] = {"label_name": kind, "method": label, "split": split, "files": files}
                found[folder] |= {"origin": origin, "name": str(name), "dataset": str(dataset)}
    for video in found.values():
        video.pop("origin")
    return found


def _check_listed_once(earlier: dict | None, label: str, split: str, origin: str, folder: str) -> None:
    """Refuse a folder listed twice, but for DeepfakeBench's own val-and-test listing."""
    if earlier is None:
        return
    if earlier["method"] == label and {earlier["split"], split} == {"val", "test"}:
        return
    raise InputError(
        f"{origin} and {earlier['origin']} list the same folder {folder}: a video has one label "
        "and one split; remove one of the entries"
    )


def _videos_of(path: Path, label: str, split: str, level: dict, compression: str) -> dict:
    """The videos of one label and split, below the compression level when there is one."""
    if not isinstance(level, dict):
        raise InputError(f"{path}: {label}/{split} is not an object")
    if level and all(isinstance(value, dict) and "frames" not in value for value in level.values()):
        if compression not in level:
            raise InputError(
                f"{path}: {label}/{split} has compression levels {', '.join(sorted(level))}, not "
                f"{compression}: pass --compression"
            )
        return level[compression]
    return level


def _under_root(root: Path, listed: str, origin: str) -> str:
    relative = inside_root(root, listed.replace("\\", "/"))
    if relative is None:
        raise InputError(f"{origin}: frame path is not under the root {root}: {listed}")
    return relative
