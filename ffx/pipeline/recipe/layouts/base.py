"""What a layout returns, and the path checks every layout shares."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ffx.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Entry:
    """One video as a layout sees it, before keys, label indices and seeded splits."""

    path: str  # relative to the root, POSIX separators
    method: str
    label_name: str | None = None  # a name looked up in the label map ...
    label: int | None = None  # ... or a class index given by a list file
    split: str | None = None  # None: the seeded group split decides
    identities: tuple[str, ...] = ()  # people in the video; shared identities share a group
    original_path: str | None = None  # a fake's source video, relative to the root
    origin: str = ""  # where the entry came from, for error messages (file:line)


@dataclass
class Scan:
    """A layout's entries plus its default label map and anything worth telling the user."""

    dataset: str
    entries: list[Entry]
    label_names: dict[str, int]
    notes: list[str] = field(default_factory=list)


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a directory, else a one-line InputError naming `what`."""
    if not path.is_dir():
        raise InputError(f"{what} not found: {path}")
    return path


def relative_inside(root: Path, listed: str, origin: str) -> str:
    """A listed path as POSIX relative to `root`; absolute paths must lie inside the root."""
    candidate = Path(listed)
    if candidate.is_absolute():
        try:
            candidate = candidate.resolve().relative_to(root.resolve())
        except ValueError:
            raise InputError(f"{origin}: path escapes the root {root}: {listed}") from None
    parts = PurePosixPath(candidate.as_posix()).parts
    if not parts or ".." in parts:
        raise InputError(f"{origin}: path escapes the root {root}: {listed}")
    relative = PurePosixPath(*parts).as_posix()
    if not (root / relative).is_file():
        raise InputError(f"{origin}: listed video does not exist: {root / relative}")
    return relative


def list_videos(directory: Path, root: Path, extensions=VIDEO_EXTENSIONS) -> list[str]:
    """Video files below `directory` (recursively), relative to `root`, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(tuple(extensions)) and not name.startswith("."):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)
