"""Where an export writes: every path kept inside `--out`, crops linked (or copied) by name.

Shared by the export formats (`ffx.pipeline.stages.export`, `ffx.pipeline.stages.export_dfb`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ffx.errors import BuildError
from ffx.pipeline.workers.shard import sample_name


def inside(out: Path, *segments: str) -> Path:
    """out/segment/...; a path that would leave `out` (lexically) is an error, whatever made it."""
    folder = out.joinpath(*segments)
    base, normalised = os.path.abspath(out), os.path.abspath(folder)
    if os.path.commonpath([base, normalised]) != base or normalised == base:
        raise BuildError(f"refusing to write outside --out {out}: {folder}")
    return folder


def link_crops(build: Path, folder: Path, key: str, crops: list[dict], copy: bool, name=None) -> None:
    """Link (or copy) a video's crops into `folder`, each named `name(row)` (default: its sample)."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in crops:
        stem = name(row) if name else sample_name(key, row["frame_index"], row["track"])
        target = folder / f"{stem}.png"
        target.unlink(missing_ok=True)  # a rerun replaces what an earlier one made
        if copy:
            shutil.copyfile(build / row["path"], target)
        else:
            os.symlink(build / row["path"], target)
