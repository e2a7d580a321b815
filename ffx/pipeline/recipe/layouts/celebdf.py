"""Celeb-DF v1/v2: Celeb-real, YouTube-real, Celeb-synthesis and the official test list."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import (
    Entry,
    Scan,
    is_video_file,
    list_file_under,
    list_videos,
    read_list_text,
    relative_inside,
    require_dir,
)
from ffx.pipeline.recipe.manifest import CelebDfLayout

LABEL_NAMES = {"real": 0, "fake": 1}
FOLDERS = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}


def _identities(folder: str, stem: str, origin: str) -> tuple[tuple[str, ...], str | None]:
    """People in a video from its name, and its source video for a fake."""
    if folder == "YouTube-real":
        return (f"youtube:{stem}",), None
    parts = stem.split("_")
    if folder == "Celeb-real" and len(parts) == 2:
        return (f"celeb:{parts[0]}",), None
    if folder == "Celeb-synthesis" and len(parts) == 3:
        target, source, clip = parts
        return (f"celeb:{target}", f"celeb:{source}"), f"Celeb-real/{target}_{clip}.mp4"
    expected = "idT_idS_NNNN" if folder == "Celeb-synthesis" else "idN_NNNN"
    raise InputError(f"{origin}: Celeb-DF names in {folder}/ look like {expected}.mp4")


def read_test_list(path: Path, root: Path) -> set[str]:
    """Relative paths of the official test videos (lines `label path`, label 1 = real)."""
    test_paths = set()
    for line_number, line in enumerate(read_list_text(path).splitlines(), 1):
        if not line.strip():
            continue
        label, _, listed = line.strip().partition(" ")
        if label not in ("0", "1") or not listed:
            raise InputError(f"{path}:{line_number}: expected 'LABEL PATH' (label 0 or 1), got {line!r}")
        test_paths.add(relative_inside(root, listed.strip(), f"{path}:{line_number}"))
    return test_paths


def scan(root: Path, layout: CelebDfLayout, splits_dir: Path | None) -> Scan:
    """Entries for every Celeb-DF video; the test list fixes the test split when present."""
    require_dir(root, "dataset root")
    list_dir = splits_dir if splits_dir is not None else root
    test_list = list_file_under(list_dir, layout.test_list, "layout.test_list")
    if splits_dir is not None and not test_list.is_file():
        raise InputError(f"split file not found: {test_list}")
    test_paths = read_test_list(test_list, root) if test_list.is_file() else None
    entries = []
    for folder, label_name in FOLDERS.items():
        for path in list_videos(require_dir(root / folder, f"Celeb-DF folder {folder}/"), root):
            identities, original = _identities(folder, PurePosixPath(path).stem, path)
            split = None if test_paths is None else ("test" if path in test_paths else "trainval")
            if original is not None and not is_video_file(root / original):
                original = None
            entries.append(
                Entry(path, folder, label_name, split=split, identities=identities, original_path=original)
            )
    notes = [] if test_paths is not None else [f"no {layout.test_list}: seeded split for all videos"]
    return Scan(f"celebdf-{layout.version}", entries, dict(LABEL_NAMES), notes)
