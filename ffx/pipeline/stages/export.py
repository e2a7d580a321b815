"""`ffx export`: the face crops as the inputs other code reads, so it trains on ffx output unchanged.

- `mcx-api`: `{split}.txt`, one `path label` line per crop (the public MCX-API datalist);
- `lib`: `{split}.csv`, one `label,folder,nframes` line per video, the folder holding its crops
  (BUILD/faces/{key}/, frame order = file name order); with --all-faces crops in a build, the
  folder holds links to the main face's crops only (`OUT/faces/{key}/`);
- `imagefolder`: `{split}/{label_name}/{sample}.png`, symbolic links to the crops (`copy`: files).

Paths are absolute, so the lists work from any directory. Videos without a label are left out
(they cannot be trained on) and counted in the report.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ffx.errors import FfxError
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.stage import current_table
from ffx.pipeline.engine.statuses import Status
from ffx.pipeline.recipe.schema import UNKNOWN_LABEL
from ffx.pipeline.stages.shard_worker import sample_name

FORMATS = ("mcx-api", "lib", "imagefolder")


@dataclass
class ExportReport:
    """What `ffx export` wrote: crops per split, and the crops of videos without a label."""

    out: Path
    export_format: str
    crops: dict[str, int] = field(default_factory=dict)
    videos: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0


def run_export(build: Path, export_format: str, out: Path, copy: bool = False) -> ExportReport:
    """Write the export in `export_format` for every labelled crop of the build under `out`."""
    if export_format not in FORMATS:
        raise FfxError(f"unknown export format {export_format!r}; choose from {', '.join(FORMATS)}")
    where = BuildDir(Path(build).resolve())
    build, out = where.root, Path(out)
    videos = {row["key"]: row for row in current_table(where, "videos").to_pylist()}
    faces = current_table(where, "faces").to_pylist()
    report = ExportReport(out, export_format)
    crops_of: dict[str, list[dict]] = {}
    for row in faces:
        if row["status"] != Status.OK.value or not row["path"]:
            continue
        if videos[row["key"]]["label"] == UNKNOWN_LABEL:
            report.unlabelled += 1
            continue
        crops_of.setdefault(row["key"], []).append(row)
    by_split: dict[str, list[str]] = {}
    for key in sorted(crops_of):
        crops = sorted(crops_of[key], key=lambda row: (row["frame_index"], row["track"]))
        video = videos[key]
        lines = by_split.setdefault(video["split"], [])
        if export_format == "mcx-api":
            lines += [f"{build / row['path']} {video['label']}" for row in crops]
        elif export_format == "lib":
            main_face = [row for row in crops if row["track"] == 0]
            folder = where.faces / key
            if len(main_face) != len(crops):  # other faces' crops share the folder: link the main ones
                folder = out.resolve() / "faces" / key
                _link_crops(build, folder, key, main_face, copy)
            lines.append(_csv_line([video["label"], folder, len(main_face)]))
        else:
            _link_crops(build, out / video["split"] / video["label_name"], key, crops, copy)
        report.crops[video["split"]] = report.crops.get(video["split"], 0) + len(crops)
    report.videos = dict(Counter(videos[key]["split"] for key in crops_of))
    if export_format != "imagefolder":
        suffix = ".txt" if export_format == "mcx-api" else ".csv"
        for split, lines in by_split.items():
            atomic.write_bytes(out / f"{split}{suffix}", ("\n".join(lines) + "\n").encode())
    return report


def _csv_line(fields: list) -> str:
    """One CSV line, quoted where a path holds a comma or a quote."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _link_crops(build: Path, folder: Path, key: str, crops: list[dict], copy: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row in crops:
        target = folder / f"{sample_name(key, row['frame_index'], row['track'])}.png"
        target.unlink(missing_ok=True)  # a rerun replaces what an earlier one made
        if copy:
            shutil.copyfile(build / row["path"], target)
        else:
            os.symlink(build / row["path"], target)
