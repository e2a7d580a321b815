"""`ffx import-crops`: face crops made elsewhere (folders of crops, a DeepfakeBench dataset JSON)
as a build that starts at `ffx shard`.

It writes the build's tables as the stages before `ffx shard` would, through the stage engine
(ledger, locks, provenance, worker processes), so `ffx shard`, `ffx verify`, `ffx status`,
`ffx export` and the trainer run on it unchanged:

- `ffx index` with the `crops` layout (`videos.parquet`, `manifest.toml`, `index.json`): one
  "video" per folder of crops, keys, labels and splits as for any layout;
- `frames.parquet` and `faces.parquet`: one row each per image (`ffx.pipeline.workers.import_crops`),
  the crop at `faces/{key}/{frame:06d}.png` (the image decoded and written again as ffx's RGB PNG,
  so JPEG and palette images become the PNG every shard holds). `ImportStage` writes the frames
  rows in `ffx extract`'s place and the faces rows into `ffx crop`'s ledger as its companion,
  each with the `made_from` those stages' plans give, so the tables are current.

Images can change inside a folder without the folder's index entry changing, so every run reads
every image again. Running `ffx extract` or `ffx crop` with other settings on such a build would
look for videos that do not exist: the crops are the build's input.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ffx.errors import InputError
from ffx.pipeline.engine.builddir import BuildDir, crop_file
from ffx.pipeline.engine.currency import Plan, current_table
from ffx.pipeline.engine.stage import Stage, run_stage
from ffx.pipeline.engine.statuses import Status
from ffx.pipeline.recipe.layouts.crops import crop_files
from ffx.pipeline.recipe.manifest import Manifest
from ffx.pipeline.recipe.schema import FRAMES_SCHEMA
from ffx.pipeline.stages.crop import CropStage
from ffx.pipeline.stages.extract import ExtractStage
from ffx.pipeline.stages.index import IndexReport, run_index
from ffx.pipeline.workers.extract import Extracted, rows_without_frames
from ffx.pipeline.workers.import_crops import ImportTask, import_folder


@dataclass
class ImportReport:
    """What `ffx import-crops` wrote."""

    index: IndexReport
    videos: int = 0
    crops: int = 0
    rows_by_status: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, error)


def crops_recipe(
    source_format: str,
    json_file: str = "",
    compression: str = "c23",
    label_folders: tuple[str, ...] = ("real", "fake"),
    seed: int = 0,
    resolution: int = 256,
) -> Manifest:
    """The recipe of an imported build: the `crops` layout, every image (`all`)."""
    layout: dict = {"kind": "crops", "format": source_format}
    if source_format == "deepfakebench":
        layout |= {"json_file": json_file, "compression": compression, "resolution": resolution}
    else:
        layout["label_folders"] = list(label_folders)
    binary = source_format == "deepfakebench" or tuple(label_folders) == ("real", "fake")
    return Manifest.model_validate(
        {
            "name": f"crops-{source_format}",
            "description": "face crops imported with `ffx import-crops`",
            "sampling": "all",
            "seed": seed,
            "layout": layout,
            "labels": {"mode": "binary" if binary else "methods"},
        }
    )


@dataclass
class ImportPlan(Plan):
    """The plan of one import: each folder's path below the crops root and its images."""

    path_of: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


class ImportStage(Stage):
    """Folders of crop images -> frames rows, and faces rows for `ffx crop`'s ledger. Not
    registered: it stands in for `ffx extract` and `ffx crop` on a build of imported crops."""

    name, upstream, command, unit = "frames", "videos", "ffx import-crops", "crops"
    schema, sort_by = FRAMES_SCHEMA, ("key", "frame_index")
    array = False

    def __init__(self) -> None:
        self.companion = CropStage("cpu")  # its rows come from here; it never detects

    def plan(self, build: BuildDir, recipe: Manifest) -> ImportPlan:
        # The frames rows' `made_from` is the one `ffx extract`'s plan gives: the stages after
        # read the table through that plan.
        extract = ExtractStage().plan(build, recipe)
        files = crop_files(build.video_root(), recipe.layout)
        return ImportPlan(extract.made_from, path_of=extract.path_of, files=files)

    def tasks(
        self,
        plan: ImportPlan,
        build: BuildDir,
        recipe: Manifest,
        keys: list[str],
        done: pa.Table,
        workers: int,
    ) -> list:
        build.faces.mkdir(parents=True, exist_ok=True)
        source, settings = str(build.video_root()), CropStage.settings(recipe)
        layout = recipe.layout
        resolution = layout.resolution if layout.format == "deepfakebench" else 0
        return [
            ImportTask(
                key,
                source,
                tuple(plan.files[plan.path_of[key]]),
                str(build),
                recipe.crop.png_level,
                settings,
                resolution,
                recipe.png_encoder,
            )
            for key in keys
        ]

    worker = staticmethod(import_folder)

    def result_rows(self, task: ImportTask, result: Extracted, report) -> list[dict]:
        return result.frames

    def companion_rows(self, task: ImportTask, result) -> list[dict]:
        return result.faces if isinstance(result, Extracted) else []

    def made(self, recipe: Manifest) -> str:
        return "imported"

    def has_output(self, row: dict) -> bool:
        return bool(row["pixels_sha256"])  # an image read

    def outputs(self, plan: ImportPlan, build: BuildDir, rows: pa.Table) -> pa.Table:
        was_read = pc.invert(pc.equal(rows.column("pixels_sha256"), ""))
        read = rows.select(["key", "frame_index"]).filter(was_read).to_pydict()
        paths = [crop_file(key, frame, 0, False) for key, frame in zip(read["key"], read["frame_index"])]
        return pa.table({"key": pa.array(read["key"], pa.string()), "path": pa.array(paths, pa.string())})

    def inputs_present(self, plan: ImportPlan, build: BuildDir, key: str) -> bool:
        return (build.video_root() / plan.path_of[key]).is_dir()

    def failure_rows(self, plan: Plan, key: str, status: Status, error: str) -> list[dict]:
        return rows_without_frames(key, status, error)

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        shutil.rmtree(build.faces / key, ignore_errors=True)


def run_import(
    source: Path,
    build: Path,
    source_format: str = "folders",
    json_file: Path | None = None,
    compression: str = "c23",
    label_folders: tuple[str, ...] = ("real", "fake"),
    seed: int = 0,
    workers: int | None = None,
    show_progress: bool = True,
    resolution: int = 256,
) -> ImportReport:
    """Index the crops under `source`, then write frames.parquet, faces.parquet and BUILD/faces/."""
    source = Path(source).resolve()
    if source_format not in ("folders", "deepfakebench"):
        raise InputError(f"unknown crops format {source_format!r}; choose folders or deepfakebench")
    listed = ""
    if source_format == "deepfakebench":
        if json_file is None:
            raise InputError("--format deepfakebench needs --json FILE (the dataset JSON)")
        try:
            listed = Path(json_file).resolve().relative_to(source).as_posix()
        except ValueError:
            raise InputError(
                f"{json_file} is not under {source}: copy the dataset JSON below the crops root"
            ) from None
    recipe = crops_recipe(source_format, listed, compression, label_folders, seed, resolution)
    where = BuildDir(build)
    index = run_index(recipe, source, where.root)
    every_status = [status.value for status in Status]  # every image is read again (see above)
    run_stage(ImportStage(), where, workers=workers, retry_statuses=every_status, show_progress=show_progress)
    # The faces rows are in `ffx crop`'s ledger, current: this run of the stage only merges them
    # (and drops the folders of videos that left the source).
    run_stage(CropStage("cpu"), where, show_progress=False)
    faces = current_table(where, "faces")
    report = ImportReport(index, videos=current_table(where, "videos").num_rows)
    report.rows_by_status = Counter(faces.column("status").to_pylist())
    report.crops = report.rows_by_status[Status.OK.value]
    report.failed = [
        (row["key"], row["error"]) for row in faces.to_pylist() if row["status"] != Status.OK.value
    ]
    return report
