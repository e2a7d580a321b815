"""What a layout returns, and the path checks every layout shares."""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ffx.errors import InputError

# Animated GIFs are videos too (PyAV decodes them): face-swap clips are shared as GIFs.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


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
    key: str | None = None  # the name its source gives it, kept as its key (else one from the path)


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


def is_video_file(path: Path) -> bool:
    """A file, or a symbolic link whose target is missing (a disk not mounted, say): it is
    indexed all the same, and `ffx extract` reports it as missing."""
    return path.is_file() or (path.is_symlink() and not path.exists())


def video_files(folder: Path) -> set[str]:
    """The names in `folder` that `is_video_file` takes, from one listing (a stat per name only
    for links): a part of DFDC lists 2 400 videos, each a round trip on a cluster file system."""
    try:
        with os.scandir(folder) as listing:
            return {
                entry.name
                for entry in listing
                if entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))
            }
    except OSError:
        return set()


def inside_root(root: Path, listed: str) -> str | None:
    """`listed` as a POSIX path relative to `root`, normalised lexically (`a/../b` is `b`), when it
    lies inside the root, else None. Links are not resolved (a linked folder stays inside); an
    absolute path is inside when it starts with the root or with a folder that is the root."""
    candidate = PurePosixPath(posixpath.normpath(listed)) if listed else PurePosixPath("..")
    if candidate.is_absolute():
        candidate = _relative_to_root(candidate, root)
        if candidate is None:
            return None
    if candidate.parts[:1] in ((), (".",), ("..",)):
        return None
    return candidate.as_posix()


def _relative_to_root(candidate: PurePosixPath, root: Path) -> PurePosixPath | None:
    absolute_root = PurePosixPath(posixpath.normpath(os.path.abspath(root)))
    if candidate.is_relative_to(absolute_root):
        return candidate.relative_to(absolute_root)
    real_root = root.resolve()
    for ancestor in reversed(candidate.parents[:-1]):  # shortest first, `/` left out
        if Path(ancestor).resolve() == real_root:  # the root by another name (a link to it)
            return candidate.relative_to(ancestor)
    return None


def relative_inside(root: Path, listed: str, origin: str) -> str:
    """A listed path as POSIX relative to `root`, normalised lexically; it must lie inside the
    root (absolute paths too) and name a video file."""
    relative = inside_root(root, listed)
    if relative is None:
        raise InputError(f"{origin}: path escapes the root {root}: {listed}")
    if not is_video_file(root / relative):
        raise InputError(f"{origin}: listed video does not exist: {root / relative}")
    return relative


def list_file_under(folder: Path, listed: str, field: str) -> Path:
    """The path of a list file named by a recipe field; it must lie under `folder` (lexically,
    after normalisation), so a recipe cannot have ffx read files elsewhere."""
    relative = inside_root(folder, listed)
    if relative is None:
        raise InputError(
            f"{field} = {listed!r} is not under {folder}: give a path relative to it, without ../"
        )
    return folder / relative


def read_list_text(path: Path, encoding: str = "utf-8") -> str:
    """The text of a list file; one line naming the file when it is not readable text."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text list") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None


def list_videos(
    directory: Path, root: Path, extensions=VIDEO_EXTENSIONS, skipped: Counter | None = None
) -> list[str]:
    """Video files below `directory` (recursively), relative to `root`, sorted. Linked folders
    are followed (a method folder linked from another disk), except a link back to a folder
    above it, which would loop; the paths stay those below `root`. Files left out for their
    extension are counted in `skipped` by extension, where given (hidden files are not)."""
    top = os.fspath(directory)
    chains = {top: frozenset({os.path.realpath(top)})}  # real paths of each folder's ancestors
    suffixes = tuple(extension.lower() for extension in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        chain = chains.pop(dirpath)
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in chain:
                kept.append(name)
                chains[os.path.join(dirpath, name)] = chain | {real}
        dirnames[:] = kept
        for name in filenames:
            if name.startswith("."):
                continue
            if name.lower().endswith(suffixes):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
            elif skipped is not None:
                skipped[Path(name).suffix.lower() or "(none)"] += 1
    return sorted(found)


def skipped_note(skipped: Counter, extensions) -> list[str]:
    """A line naming the files an index left out, by extension (none: no line)."""
    if not skipped:
        return []
    counts = ", ".join(f"{extension} {count}" for extension, count in skipped.most_common())
    return [
        f"{sum(skipped.values())} files left out, not videos by their extension ({counts}); the "
        f"layout takes {' '.join(extensions)} (`layout.extensions`)"
    ]
