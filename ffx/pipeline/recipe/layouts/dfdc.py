"""DFDC: dfdc_train_part_N/metadata.json maps each file to its label and original."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import Entry, Scan, require_dir, video_files
from ffx.pipeline.recipe.manifest import DfdcLayout

LABEL_NAMES = {"real": 0, "fake": 1}


def scan(root: Path, layout: DfdcLayout, splits_dir: Path | None) -> Scan:
    """Entries from every part's metadata.json; fakes share their original's group."""
    require_dir(root, "dataset root")
    pattern = PurePosixPath(layout.parts)
    if not layout.parts.strip() or pattern.is_absolute() or ".." in pattern.parts:
        raise InputError(
            f"layout.parts = {layout.parts!r}: give a glob of folders under the root, without ../"
        )
    parts = sorted(path for path in root.glob(layout.parts) if path.is_dir())
    if not parts:
        raise InputError(f"no DFDC parts matching {layout.parts!r} under {root}")
    entries = []
    for part in parts:
        metadata_path = part / "metadata.json"
        if not metadata_path.is_file():
            raise InputError(f"DFDC metadata not found: {metadata_path}")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"{metadata_path}: not valid JSON: {error}") from None
        videos = video_files(part)
        for file_name in sorted(metadata):
            info = metadata[file_name]
            origin = f"{metadata_path}: {file_name}"
            label = str(info.get("label", "")).upper() if isinstance(info, dict) else ""
            if label not in ("REAL", "FAKE"):
                raise InputError(f"{origin}: label must be REAL or FAKE, got {info!r}")
            if "/" in file_name or file_name.startswith("."):
                raise InputError(f"{origin}: path escapes the part folder")
            relative = f"{part.name}/{file_name}"
            if file_name not in videos:
                raise InputError(f"{origin}: listed video does not exist: {root / relative}")
            original = info.get("original") if label == "FAKE" else None
            original_path = f"{part.name}/{original}" if original else None
            if original_path and original not in videos:
                original_path = None
            identity = f"dfdc:{original or file_name}"
            entries.append(
                Entry(
                    relative,
                    "original" if label == "REAL" else "fake",
                    label.lower(),
                    identities=(identity,),
                    original_path=original_path,
                    origin=origin,
                )
            )
    return Scan("dfdc", entries, dict(LABEL_NAMES))
