"""`ffx export`: the face crops as the inputs other code reads, so it trains on ffx output unchanged.

- `mcx-api`: `{split}.txt`, one `path label` line per crop (the public MCX-API datalist);
- `lib`: what LIB's reader (`dataset.py::ReadDataset.read_txt`, Exposing-the-Deception) opens:
  per dataset `{dataset}/{train,val,test}_{real,fake}.txt` (all six, empty ones too), one
  `label,folder,nframes` line per video, label 0 real / 1 fake, the folder holding its crops
  (BUILD/faces/{key}/: the reader lists it and keeps the `.png` files); with --all-faces crops in
  a build, the folder holds links to the main face's crops only (`OUT/faces/{key}/`). The reader
  deletes every blank in a line and splits on commas, so a folder path holding either is refused;
- `imagefolder`: `{split}/{label_name}/{sample}.png`, symbolic links to the crops (`copy`: files);
- `deepfakebench`: the dataset JSON DeepfakeBench's loader reads
  (`ffx.pipeline.stages.export_dfb`).

Paths are absolute, so the lists work from any directory. Videos without a label are left out
(they cannot be trained on) and counted in the report. Nothing is written outside `out`: a key,
split or label name that is not one safe folder name stops the export before it writes anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ffx.errors import BuildError, FfxError
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import current_table
from ffx.pipeline.engine.statuses import Status
from ffx.pipeline.recipe.manifest import LABEL_NAME_RULE, label_name_problem
from ffx.pipeline.recipe.schema import SPLITS, UNKNOWN_LABEL, is_real_name, is_safe_key
from ffx.pipeline.stages.export_files import inside, link_crops

FORMATS = ("mcx-api", "lib", "imagefolder", "deepfakebench")
LIB_KINDS = ("real", "fake")


@dataclass
class ExportReport:
    """What `ffx export` wrote: crops per split, and the crops of videos without a label."""

    out: Path
    export_format: str
    crops: dict[str, int] = field(default_factory=dict)
    videos: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    notes: list[str] = field(default_factory=list)
    config: str = ""  # deepfakebench: the config lines to set (also written beside the JSON)


def run_export(
    build: Path,
    export_format: str,
    out: Path,
    copy: bool = False,
    dfb_root: Path | None = None,
    dfb_resolution: int = 256,
) -> ExportReport:
    """Write the export in `export_format` for every labelled crop of the build under `out`.

    `dfb_root` (deepfakebench only): the folder DeepfakeBench runs from (its checkout), which
    the JSON's frame paths are relative to; default: the current directory."""
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
    for key in crops_of:
        _check_names(where, key, videos[key], export_format)
    if export_format == "deepfakebench":
        from ffx.pipeline.stages.export_dfb import export_deepfakebench

        return export_deepfakebench(where, videos, crops_of, out, copy, dfb_root, report, dfb_resolution)
    by_split: dict[str, list[str]] = {}
    lib_lines: dict[tuple[str, str, str], list[str]] = {}
    for key in sorted(crops_of):
        crops = sorted(crops_of[key], key=lambda row: (row["frame_index"], row["track"]))
        video = videos[key]
        lines = by_split.setdefault(video["split"], [])
        if export_format == "mcx-api":
            lines += [f"{build / row['path']} {video['label']}" for row in crops]
        elif export_format == "lib":
            main_face = [row for row in crops if row["track"] == 0]
            folder = where.faces / key
            # Other faces' crops or masks (`*.mask.png`) share the folder, and LIB's reader takes
            # every PNG there for a face: link the main face's crops into a folder of their own.
            if len(main_face) != len(crops) or any(row.get("mask_path") for row in crops):
                folder = inside(out.resolve(), "faces", key)
                link_crops(build, folder, key, main_face, copy)
            if any(character.isspace() or character == "," for character in str(folder)):
                raise BuildError(
                    f"{folder}: LIB's reader deletes blanks and splits lines on commas, so this "
                    "folder cannot be listed; use a --build and --out path without either"
                )
            kind = "real" if is_real_name(video["label_name"]) else "fake"
            lib_lines.setdefault((video["dataset"], video["split"], kind), []).append(
                f"{int(kind == 'fake')},{folder},{len(main_face)}"
            )
        else:
            folder = inside(out, video["split"], video["label_name"])
            link_crops(build, folder, key, crops, copy)
        report.crops[video["split"]] = report.crops.get(video["split"], 0) + len(crops)
    report.videos = dict(Counter(videos[key]["split"] for key in crops_of))
    if export_format == "mcx-api":
        for split in SPLITS:  # every list, an empty one too: MCX-API's train.py opens val.txt
            lines = by_split.get(split, [])
            atomic.write_bytes(inside(out, f"{split}.txt"), "".join(f"{line}\n" for line in lines).encode())
            if not lines:
                report.notes.append(f"{split}.txt is empty: the build's {split} split holds no labelled crop")
    elif export_format == "lib":
        for dataset in sorted({videos[key]["dataset"] for key in crops_of}):
            for split in SPLITS:
                for kind in LIB_KINDS:
                    lines = lib_lines.get((dataset, split, kind), [])
                    text = "".join(f"{line}\n" for line in lines)
                    atomic.write_bytes(inside(out, dataset, f"{split}_{kind}.txt"), text.encode())
    return report


def _check_names(where: BuildDir, key: str, video: dict, export_format: str) -> None:
    """Refuse a video whose key, split or label name would make a path leave `--out` (a build
    indexed before label names were checked, or an edited table): one line, nothing written."""
    if not is_safe_key(key):
        raise BuildError(f"{where.videos}: key {key!r} is not a safe file name; export writes nothing")
    checked = {"imagefolder": ("split", "label_name"), "lib": ("split", "dataset")}.get(
        export_format, ("split",)
    )
    for field_name in checked:  # {split}.txt, {split}/{label_name}/
        if label_name_problem(video[field_name]):
            raise BuildError(
                f"{where.videos}: video {key}: {field_name} {video[field_name]!r} is not a safe folder "
                f"name (allowed: {LABEL_NAME_RULE}); export would write outside --out, so it writes "
                "nothing (re-index with a safe name)"
            )
