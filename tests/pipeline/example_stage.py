"""`ffx sharpness`: how sharp each face crop is (variance of its Laplacian), a stage added to ffx
in one module. The docs' development page shows this file as its worked example
(`engine/test_registry.py` checks that they are the same)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import pyarrow as pa

from ffx.pipeline.engine.currency import Plan, current_table
from ffx.pipeline.engine.identity import digest
from ffx.pipeline.engine.registry import register_stage
from ffx.pipeline.engine.rows import rows_by_key
from ffx.pipeline.engine.stage import Stage, run_stage
from ffx.pipeline.engine.statuses import NO_FRAME, Status

COLUMNS = {"key": pa.string(), "frame_index": pa.int32(), "sharpness": pa.float64(), "status": pa.string()}
SCHEMA = pa.schema([*COLUMNS.items(), ("error", pa.string()), ("made_from", pa.string())])


def row(key: str, frame: int, sharpness: float | None, status: Status, error: str = "") -> dict:
    return {"key": key, "frame_index": frame, "sharpness": sharpness, "status": status.value, "error": error}


@dataclass(frozen=True)
class SharpnessTask:  # what a worker process gets: plain, picklable data
    key: str
    crops: tuple[tuple[int, str], ...]  # (frame index, PNG path)


def measure(task: SharpnessTask, report) -> list[dict]:  # runs in a worker process
    grey = {frame: cv2.imread(path, cv2.IMREAD_GRAYSCALE) for frame, path in task.crops}
    return [
        row(task.key, frame, cv2.Laplacian(image, cv2.CV_64F).var(), Status.OK)
        for frame, image in grey.items()
    ]


@dataclass
class SharpnessPlan(Plan):  # this run's facts live in its plan, not on the stage
    crops: dict[str, list[dict]] = field(default_factory=dict)


@register_stage
class SharpnessStage(Stage):
    name, upstream, command, unit = "sharpness", "faces", "ffx sharpness", "crops"
    schema, sort_by, array = SCHEMA, ("key", "frame_index"), False  # no `ffx slurm` array
    worker = staticmethod(measure)

    def plan(self, build, recipe) -> SharpnessPlan:
        crops = rows_by_key(current_table(build, "faces"))  # current all the way up, or an error
        made_from = {key: digest(sorted(r["made_from"] for r in rows)) for key, rows in crops.items()}
        faceless = [key for key, rows in crops.items() if not any(r["path"] for r in rows)]
        blocked = {key: self.failure_rows(None, key, Status.NO_FACE, "no face crop") for key in faceless}
        return SharpnessPlan(made_from, blocked, crops=crops)

    def tasks(self, plan, build, recipe, keys, done, workers) -> list[SharpnessTask]:
        crops = {
            key: [(r["frame_index"], str(build.root / r["path"])) for r in plan.crops[key] if r["path"]]
            for key in keys
        }
        return [SharpnessTask(key, tuple(crops[key])) for key in keys]

    def has_output(self, row: dict) -> bool:
        return row["status"] == Status.OK.value

    def failure_rows(self, plan, key, status, error) -> list[dict]:
        return [row(key, NO_FRAME, None, Status(status), error)]

    def remove_outputs(self, build, key) -> None:
        pass

    @classmethod
    def build_step(cls, build, options):  # how `ffx build` runs it
        return run_stage(
            cls(), build, part=options.part, workers=options.workers, show_progress=options.show_progress
        )
