"""`ffx crop`: MTCNN face crops of every extracted frame plus faces.parquet.

Each video is one task in a worker process (`ffx.pipeline.workers.crop`; on a CPU one process per
core with one torch thread each, on a GPU one process). A task detects faces on its frames in
batches, follows the main face across frames, cuts the preset's crop from the full-resolution
frame and publishes the crops folder atomically, like extract. With `crop.boxes_from_original`,
fakes reuse the boxes found on their source video (fakes are pixel-aligned with it): a fake is
queued as soon as its original is done, in the same worker pool (both are in the same part).
The engine (`ffx.pipeline.engine.stage`) runs the stage.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import Plan, current_table, proven_made_from
from ffx.pipeline.engine.identity import crop_made_from
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import register_stage
from ffx.pipeline.engine.rows import RowsByKey, json_texts, rows_by_key
from ffx.pipeline.engine.stage import BuildOptions, Stage, StageReport, run_stage
from ffx.pipeline.engine.statuses import NO_FRAME, Status
from ffx.pipeline.media.detect import DetectorSettings, resolve_device
from ffx.pipeline.media.landmarks import DLIB68, NONE, model_file, model_sha256
from ffx.pipeline.recipe.manifest import Manifest, png_encoder_setting
from ffx.pipeline.recipe.schema import FACES_SCHEMA, FRAMES_SCHEMA
from ffx.pipeline.workers.crop import (
    BOX_ORIGINAL,
    CropJob,
    CropSettings,
    CropTask,
    ReusedFace,
    crop_video,
    empty_row,
)

# `[crop]` fields left out of `made_from` at these values (see CropStage.settings).
LANDMARK_DEFAULTS = {"landmarks": NONE, "mask": False}


@dataclass
class CropPlan(Plan):
    """The plan of one crop run: the frames rows of each video, each video's original and path."""

    frames_of: RowsByKey = field(default_factory=lambda: rows_by_key(FRAMES_SCHEMA.empty_table()))
    original_of: dict[str, str | None] = field(default_factory=dict)
    path_of: dict[str, str] = field(default_factory=dict)
    # Set by tasks(): original key -> fakes queued behind it, and (key, faces) -> task.
    waiting: dict[str, list[str]] = field(default_factory=dict)
    task_for: Callable[[str, dict[int, ReusedFace]], CropTask] | None = None


@register_stage
class CropStage(Stage):
    """Frames -> faces: a video's crops are made from its frames rows (and, when boxes are reused,
    its original's) and the `[crop]` settings."""

    name, upstream, command, unit = "faces", "frames", "ffx crop", "faces"
    schema, sort_by = FACES_SCHEMA, ("key", "frame_index", "track")
    reads_videos = True

    def __init__(self, device: str = "auto", batch_size: int | None = None, root: Path | None = None):
        self.device, self.batch_size = device, batch_size
        self.root = root  # where the videos are now, if they moved since `ffx index`

    @staticmethod
    def settings(recipe: Manifest) -> dict:
        """The `[crop]` fields that shape every video's crops. Box reuse shapes only fakes (whose
        original is in the build): it enters their `made_from` as the original's frames, so
        turning it on or off redoes exactly the fakes. The landmark fields enter only when set, so
        builds made before them keep their digests; a model file enters with its sha256."""
        crop = recipe.crop
        unset = {name for name, value in LANDMARK_DEFAULTS.items() if getattr(crop, name) == value}
        settings = crop.model_dump(mode="json", exclude={"boxes_from_original", *unset})
        if crop.landmarks not in (NONE, DLIB68):
            settings["landmarks_sha256"] = model_sha256(str(model_file(crop.landmarks)))
        if crop.track_min_prob is not None:
            # Tracks now follow a face beyond their confident frames frame by frame (continuations
            # used to reach 5 frames past them): crops made the earlier way are made again.
            settings["track_rule"] = "chained"
        return settings | png_encoder_setting(recipe)

    def files_read(self, recipe: Manifest) -> list[Path]:
        landmarks = recipe.crop.landmarks
        return [] if landmarks in (NONE, DLIB68) else [Path(landmarks)]  # a file of the user's own

    def job(
        self,
        recipe: Manifest,
        original: str | None = None,
        original_faces: dict[int, ReusedFace] | None = None,
    ) -> CropJob:
        """How a worker crops one video (its original's frames identity and faces when it reuses
        boxes, "detected" for a fake that does not, None for a video without an original)."""
        crop = recipe.crop
        settings = CropSettings(
            crop.preset,
            crop.size,
            crop.scale,
            crop.min_prob,
            crop.all_faces,
            crop.png_level,
            DetectorSettings(crop.detect_max_side, crop.min_face_ratio),
            crop.track_min_prob,
            str(model_file(crop.landmarks)) if crop.landmarks != NONE else "",
            crop.mask,
            recipe.png_encoder,
        )
        batch_size = self.batch_size or (
            32 if self.device.startswith("cuda") else 8
        )  # CPUs gain nothing above 8
        return CropJob(
            settings, self.settings(recipe), self.device, batch_size, original, original_faces or {}
        )

    def plan(self, build: BuildDir, recipe: Manifest) -> CropPlan:
        frames_of = rows_by_key(current_table(build, "frames"))
        videos = current_table(build, "videos").select(["key", "original_key", "path"]).to_pydict()
        original_of = dict(zip(videos["key"], videos["original_key"]))
        path_of = dict(zip(videos["key"], videos["path"]))
        settings = self.settings(recipe)
        made_from = proven_made_from(build, self.name, recipe)
        if made_from is None:
            identity = frames_identities(frames_of)
            made_from = {}
            for key, original in original_of.items():
                upstream = None
                if original in identity:
                    upstream = identity[original] if recipe.crop.boxes_from_original else "detected"
                made_from[key] = crop_made_from(settings, identity.get(key, ""), upstream)
        first_frame, status, error = (frames_of.first(name) for name in ("frame_index", "status", "error"))
        blocked = {}
        for key in original_of:
            if key not in first_frame:
                blocked[key] = [empty_row(key, NO_FRAME, Status.MISSING, "no frames rows")]
            elif first_frame[key] == NO_FRAME:
                blocked[key] = [empty_row(key, NO_FRAME, status[key], error[key])]
        return CropPlan(made_from, blocked, family_of(original_of), frames_of, original_of, path_of)

    def workers(self, requested: int | None, cores: int) -> int:
        self.device = resolve_device(self.device)
        return requested or (1 if self.device.startswith("cuda") else cores)

    def tasks(
        self, plan: CropPlan, build: BuildDir, recipe: Manifest, keys: list[str], done: pa.Table, workers: int
    ) -> list:
        rows_of = {key: plan.frames_of[key] for key in keys}
        frames_of = {
            key: tuple((row["frame_index"], row["path"], row["pixels_sha256"]) for row in rows)
            for key, rows in rows_of.items()
        }
        pixels = {key: sum(row["width"] * row["height"] for row in rows) for key, rows in rows_of.items()}
        original_of = plan.original_of
        crop = recipe.crop
        root = build.video_root(self.root)

        def task_for(key: str, original_faces: dict[int, ReusedFace]) -> CropTask:
            backend = rows_of[key][0]["backend"]
            video = str(root / plan.path_of[key])
            job = self.job(recipe, None, original_faces)
            return CropTask(key, frames_of[key], str(build), job, video, backend)

        plan.task_for = task_for
        todo = set(keys)
        reusing = [key for key in keys if crop.boxes_from_original and original_of[key] in original_of]
        # A fake waits for its original when that is cropped in this run; otherwise it starts at once
        # with the original's current faces (none when the original has no frames).
        plan.waiting = {}
        for key in reusing:
            if original_of[key] in todo:
                plan.waiting.setdefault(original_of[key], []).append(key)
        queued = {key for fakes in plan.waiting.values() for key in fakes}
        ready = [key for key in reusing if key not in queued]
        known = main_faces(done.to_pylist(), {original_of[key] for key in ready}) if ready else {}
        tasks = [task_for(key, {}) for key in keys if key not in reusing]
        tasks += [task_for(key, known.get(original_of[key], {})) for key in ready]
        # The most pixels first, so the run does not end waiting on one large video.
        return sorted(tasks, key=lambda task: -pixels[task.key])

    worker = staticmethod(crop_video)

    def follow_up(self, plan: CropPlan, task: CropTask, result) -> list[CropTask]:
        rows = result[0] if isinstance(result, tuple) else []
        faces = main_faces(rows, {task.key}).get(task.key, {})
        return [plan.task_for(key, faces) for key in plan.waiting.pop(task.key, [])]

    def result_rows(self, task: CropTask, result, report: StageReport) -> list[dict]:
        rows, detected = result
        report.counts["frames detected"] += detected
        report.counts["boxes reused"] += sum(1 for row in rows if row["box_source"] == BOX_ORIGINAL)
        return rows

    def failure_rows(self, plan: Plan, key: str, status: Status, error: str) -> list[dict]:
        return [empty_row(key, NO_FRAME, status, error)]

    def inputs_present(self, plan: CropPlan, build: BuildDir, key: str) -> bool:
        frames = plan.frames_of.get(key, [])
        if any(not row["path"] for row in frames):  # no PNG kept: crop decodes the video again
            return (build.video_root(self.root) / plan.path_of[key]).is_file()
        return bool(frames) and all((build.root / row["path"]).is_file() for row in frames)

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        shutil.rmtree(build.faces / key, ignore_errors=True)

    @classmethod
    def build_step(cls, build: Path, options: BuildOptions) -> StageReport:
        return run_crop(
            build,
            part=options.part,
            device=options.device,
            workers=options.workers,
            show_progress=options.show_progress,
        )


def run_crop(
    build: Path,
    *,
    part: Part | None = None,
    device: str = "auto",
    workers: int | None = None,
    batch_size: int | None = None,
    stall_seconds: float = 300.0,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
    root: Path | None = None,
    **settings,
) -> StageReport:
    """Crop this part's videos that are not current, then merge faces.parquet once all parts are.
    `root`: where the videos are now, if the dataset moved since `ffx index` (frames that were not
    kept are decoded again from the videos).

    `settings` are `[crop]` fields of the recipe (preset, size, min_prob, boxes_from_original, ...):
    given ones are written into the build's recipe and redo the videos they shape."""
    return run_stage(
        CropStage(device, batch_size, root),
        build,
        part=part,
        workers=workers,
        stall_seconds=stall_seconds,
        options={f"crop.{name}": value for name, value in settings.items()},
        show_progress=show_progress,
        flush_seconds=flush_seconds,
    )


def family_of(original_of: dict[str, str | None]) -> dict[str, str]:
    """Each video's group for part selection: a fake goes with its original when that is indexed."""
    return {key: original if original in original_of else key for key, original in original_of.items()}


def main_faces(rows: list[dict], originals: set[str]) -> dict[str, dict[int, ReusedFace]]:
    """The main face of each original video, per frame, from its crop rows."""
    faces: dict[str, dict[int, ReusedFace]] = {}
    for row in rows:
        if row["key"] in originals and row["track"] == 0 and row["status"] == Status.OK.value:
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            faces.setdefault(row["key"], {})[row["frame_index"]] = (
                box,
                row["prob"],
                tuple(row["landmarks"]),
                row["n_faces"],
            )
    return faces


def frames_identities(frames_of: RowsByKey) -> dict[str, str]:
    """`frames_identity` of every video's frames rows, the same digests, from the columns: the
    JSON of each row by Arrow, joined per video (120 000 videos, 3.6 M rows: seconds, not minutes)."""
    table = frames_of.table
    parts = [json_texts(table.column(name)) for name in ("frame_index", "pixels_sha256", "status", "error")]
    rows = pc.binary_join_element_wise("[", parts[0], ",", parts[1], ",", parts[2], ",", parts[3], "]", "")
    return {
        key: hashlib.sha256(f"[[{text}]]".encode()).hexdigest()
        for key, text in frames_of.joined(rows.to_pylist()).items()
    }
