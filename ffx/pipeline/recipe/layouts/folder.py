"""Any folder of videos. Top-level folders named after labels (real/, fake/) give labels;
with no label folders at all, every video is indexed with label unknown."""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import Entry, Scan, list_videos, require_dir, skipped_note
from ffx.pipeline.recipe.manifest import FolderLayout
from ffx.pipeline.recipe.schema import UNKNOWN_LABEL_NAME


def scan(root: Path, layout: FolderLayout, splits_dir: Path | None) -> Scan:
    """Entries for every video below the root, labelled by their top-level folder if any."""
    require_dir(root, "dataset root")
    names = {name: index for index, name in enumerate(layout.label_folders)}
    skipped: Counter = Counter()
    paths = list_videos(root, root, layout.extensions, skipped)
    labelled = any((root / name).is_dir() for name in names)
    entries = []
    for path in paths:
        top = PurePosixPath(path).parts[0] if "/" in path else ""
        if labelled and top not in names:
            raise InputError(
                f"{root / path}: unknown label {top or '(no label folder)'!r}; "
                f"videos must sit under one of {', '.join(sorted(names))}/"
            )
        label_name = top if labelled else UNKNOWN_LABEL_NAME
        entries.append(Entry(path, label_name, label_name, identities=(f"video:{path}",)))
    return Scan("folder", entries, dict(names), skipped_note(skipped, layout.extensions))
