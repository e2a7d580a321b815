"""`ffx extract`: the sampled frames of every indexed video as lossless PNGs plus frames.parquet.

Each video is one task in a worker process (`ffx.pipeline.workers.extract`). The worker decodes
with the first backend of the chain (PyAV, then decord, then OpenCV) and falls back to the next
when a backend fails or gets fewer frames than the file holds; the main process replaces a
worker that hangs or crashes and retries the video with the remaining backends. Frames are
written into a temporary folder that is renamed to `frames/{key}/` when the video is done, so no
half-written PNG ever carries a final name, and the video's rows reach the ledger only after
that rename. The engine (`ffx.pipeline.engine.stage`) runs the stage.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from ffx.errors import InputError
from ffx.pipeline.engine import publish
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import Plan, current_table, load_recipe, proven_made_from
from ffx.pipeline.engine.identity import digest, frames_identity
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import register_stage
from ffx.pipeline.engine.stage import BuildOptions, Stage, StageReport, run_stage
from ffx.pipeline.engine.statuses import FAILED, Status
from ffx.pipeline.engine.workers import Stalled, available_cores
from ffx.pipeline.media.detect import resolve_device
from ffx.pipeline.recipe.manifest import Manifest, png_encoder_setting
from ffx.pipeline.recipe.schema import FRAMES_SCHEMA
from ffx.pipeline.stages.crop import CropStage, family_of, main_faces
from ffx.pipeline.stages.shard import sample_task
from ffx.pipeline.workers.crop import BOX_ORIGINAL, CropJob
from ffx.pipeline.workers.extract import Extracted, VideoTask, extract_video, rows_without_frames
from ffx.pipeline.workers.shard import video_facts


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:  # missing or unreadable: the worker reports it
        return 0


@dataclass
class ExtractPlan(Plan):
    """The plan of one extract run, with what its tasks are made from."""

    path_of: dict[str, str] = field(default_factory=dict)  # each video's path below the root
    original_of: dict[str, str | None] = field(default_factory=dict)
    # Set by tasks() when the crops are made in the same pass: original key -> fakes whose crops
    # need its faces, and (key, crop job) -> task.
    waiting: dict[str, list[str]] = field(default_factory=dict)
    task_for: Callable[[str, CropJob | None], VideoTask] | None = None
    recipe: Manifest | None = None
    facts_of: dict[str, dict] = field(default_factory=dict)  # each video's samples' JSON fields


@register_stage
class ExtractStage(Stage):
    """Videos -> frames: what a video's frames are made from is its file and the decode settings."""

    name, upstream, command, unit = "frames", "videos", "ffx extract", "frames"
    schema, sort_by = FRAMES_SCHEMA, ("key", "frame_index")
    reads_videos = True

    def __init__(self, root: Path | None = None, crop: CropStage | None = None):
        self.root = root  # where the videos are now, if they moved since `ffx index`
        # `ffx build`: the crop stage whose rows the workers produce in the same pass.
        self.companion = crop

    @staticmethod
    def settings(recipe: Manifest) -> dict:
        return {
            "sampling": recipe.sampling,
            "backends": list(recipe.extract.backends),
            "png_level": recipe.extract.png_level,
            "keep_frames": recipe.extract.keep_frames,
        } | png_encoder_setting(recipe)

    def plan(self, build: BuildDir, recipe: Manifest) -> ExtractPlan:
        columns = ["key", "path", "size_bytes", "resolved", "original_key"]
        if self.companion is not None:  # the pass makes the samples too: their JSON's video fields
            columns += ["dataset", "label", "label_name", "method", "split", "group"]
        videos = current_table(build, "videos").select(columns).to_pydict()
        path_of = dict(zip(videos["key"], videos["path"]))
        original_of = dict(zip(videos["key"], videos["original_key"]))
        made_from = proven_made_from(build, self.name, recipe)
        if made_from is None:
            settings = self.settings(recipe)
            facts = zip(videos["key"], videos["path"], videos["size_bytes"], videos["resolved"])
            made_from = {key: digest(settings, path, size, resolved) for key, path, size, resolved in facts}
        # Cropping in the same pass, a fake lands in its original's part (it may reuse its boxes).
        group_of = family_of(original_of) if self.companion else None
        facts_of = {}
        if self.companion is not None:
            rows = (dict(zip(videos, values)) for values in zip(*videos.values()))
            facts_of = {row["key"]: video_facts(row) for row in rows}
        return ExtractPlan(
            made_from, group_of=group_of, path_of=path_of, original_of=original_of, facts_of=facts_of
        )

    def workers(self, requested: int | None, cores: int) -> int:
        if self.companion is not None:
            self.companion.device = resolve_device(self.companion.device)
        return requested or cores

    def tasks(
        self,
        plan: ExtractPlan,
        build: BuildDir,
        recipe: Manifest,
        keys: list[str],
        done: pa.Table,
        workers: int,
    ) -> list:
        root = build.video_root(self.root)
        if not root.is_dir():
            raise InputError(f"dataset root not found: {root} (pass --root where the videos are now)")
        path_of, original_of = plan.path_of, plan.original_of
        threads = max(1, available_cores() // workers)
        build.frames.mkdir(parents=True, exist_ok=True)

        def task_for(key: str, crop: CropJob | None) -> VideoTask:
            if crop is not None:  # its samples are made from the crops' pixels in the same pass
                crop = replace(crop, samples=sample_task(recipe, build, key, plan.facts_of[key]))
            return video_task(
                key, Path(root) / path_of[key], build.frames, build.faces, recipe, threads, crop
            )

        jobs: dict[str, CropJob | None] = dict.fromkeys(keys)
        plan.waiting = {}
        if self.companion is not None:
            plan.task_for, plan.recipe = task_for, recipe
            todo = set(keys)
            for key in keys:
                original = original_of[key]
                if original not in original_of:  # an original, or a fake whose original is not indexed
                    jobs[key] = self.companion.job(recipe)
                elif not recipe.crop.boxes_from_original:
                    jobs[key] = self.companion.job(recipe, "detected")
                elif original in todo:  # its crops need its original's faces: queued behind it
                    plan.waiting.setdefault(original, []).append(key)
                # else: its original's faces are from an earlier run; `ffx crop` decodes it again
        queued = {key for fakes in plan.waiting.values() for key in fakes}
        tasks = [task_for(key, jobs[key]) for key in keys if key not in queued]
        # The largest work first, so the last tasks to run are short ones and no core idles at the
        # end while one long video finishes. A file's size is a rough measure of its work; an
        # original counts its queued fakes' too, since they start only once it is done.
        size = {key: _file_size(Path(root) / path_of[key]) for key in keys}
        family = {
            task.key: size[task.key] + sum(size[f] for f in plan.waiting.get(task.key, [])) for task in tasks
        }
        return sorted(tasks, key=lambda task: -family[task.key])

    def result_rows(self, task: VideoTask, result: Extracted, report: StageReport) -> list[dict]:
        if result.faces is not None:
            report.counts["frames detected"] += result.detected
            report.counts["faces cropped"] += sum(1 for row in result.faces if row["path"])
            report.counts["boxes reused"] += sum(
                1 for row in result.faces if row["box_source"] == BOX_ORIGINAL
            )
        return result.frames

    def companion_rows(self, task: VideoTask, result) -> list[dict]:
        return (result.faces or []) if isinstance(result, Extracted) else []

    def follow_up(self, plan: ExtractPlan, task: VideoTask, result) -> list[VideoTask]:
        """A fake reusing its original's boxes starts once the original is cropped, with its faces
        (an original without frames has none: the fake is detected, as `ffx crop` would); if the
        original could not be cropped in this pass, the fake is only extracted."""
        fakes = plan.waiting.pop(task.key, [])
        if not isinstance(result, Extracted) or result.faces is None:  # the original was not cropped
            return [plan.task_for(key, None) for key in fakes]
        identity = frames_identity(result.frames)
        faces = main_faces(result.faces, {task.key}).get(task.key, {})
        return [plan.task_for(key, self.companion.job(plan.recipe, identity, faces)) for key in fakes]

    worker = staticmethod(extract_video)

    def made(self, recipe: Manifest) -> str:
        return "written" if recipe.extract.keep_frames else "decoded"

    def has_output(self, row: dict) -> bool:
        return bool(row["pixels_sha256"])  # a decoded frame, its PNG kept or not

    def failure_rows(self, plan: Plan, key: str, status: Status, error: str) -> list[dict]:
        return rows_without_frames(key, status, error)

    def stalled_rows(self, plan: Plan, task: VideoTask, stalled: Stalled) -> list[dict]:
        publish.remove_item_temps(Path(task.frames_root), task.key)
        where = f"{stalled.last_report[0]}: " if stalled.last_report else "probing: "
        failures = (*task.failures, where + stalled.reason)
        status = Status.TIMEOUT if task.hung or stalled.hung else Status.DECODE_ERROR
        return rows_without_frames(task.key, status, "; ".join(failures))

    def retry(self, task: VideoTask, stalled: Stalled) -> VideoTask | None:
        """Retry a video whose worker hung or died with the backends after the one that did it;
        one that hung or died cropping its faces is extracted alone (`ffx crop` then crops it)."""
        if stalled.last_report is None:  # stuck before any backend started: probing will hang again
            return None
        backend = stalled.last_report[0]
        if backend not in task.backends:  # a crop step's report: decoding was done
            return replace(task, crop=None) if task.crop is not None else None
        remaining = task.backends[task.backends.index(backend) + 1 :]
        failures = (*task.failures, f"{backend}: {stalled.reason}")
        hung = task.hung or stalled.hung
        return replace(task, backends=remaining, failures=failures, hung=hung) if remaining else None

    def inputs_present(self, plan: ExtractPlan, build: BuildDir, key: str) -> bool:
        return (build.video_root(self.root) / plan.path_of[key]).is_file()

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        shutil.rmtree(build.frames / key, ignore_errors=True)

    @classmethod
    def build_step(cls, build: Path, options: BuildOptions) -> StageReport:
        """One decode per frame: the workers also crop the faces of the frames they decode, so the
        crop step finds them current (it does only what this pass could not: a fake whose original
        was done in an earlier run, a video whose worker hung while cropping)."""
        return run_extract(
            build,
            part=options.part,
            workers=options.workers,
            keep_frames=options.keep_frames,
            crop=CropStage(options.device),
            stall_seconds=120.0,  # a first detection loads torch (and CUDA)
            show_progress=options.show_progress,
        )


def video_task(
    key: str,
    source: Path,
    frames_root: Path,
    faces_root: Path,
    recipe: Manifest,
    threads: int,
    crop: CropJob | None = None,
) -> VideoTask:
    """A worker's task for one video under the recipe's sampling and `[extract]` settings (with
    `crop`, its faces are cropped in the same pass)."""
    extract = recipe.extract
    return VideoTask(
        key,
        str(source),
        str(frames_root),
        str(faces_root),
        recipe.sampling,
        tuple(extract.backends),
        extract.png_level,
        threads,
        bool(extract.keep_frames),
        crop,
        png_encoder=recipe.png_encoder,
    )


def run_extract(
    build: Path,
    *,
    part: Part | None = None,
    workers: int | None = None,
    sampling: str | None = None,
    backends: tuple[str, ...] | None = None,
    png_level: int | None = None,
    keep_frames: bool | None = None,
    crop: CropStage | None = None,
    stall_seconds: float = 60.0,
    root: Path | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
) -> StageReport:
    """Extract this part's videos that are not current, then merge frames.parquet once all parts
    are. `sampling`, `backends`, `png_level` and `keep_frames` change the build's recipe (and so
    redo every video); None keeps the recipe's (where it is unset: true, or false with `crop`).
    With `crop` (`ffx build`), the
    workers also crop the faces of the frames they decode, into that stage's ledger.

    Finished videos reach the ledger at least every `flush_seconds`; a crash redoes only the
    videos finished since the last flush (and those in flight)."""
    where = BuildDir(build)
    first_pass = not (where.table("frames").is_file() or where.parts("frames").exists())
    if keep_frames is None and first_pass and load_recipe(where).extract.keep_frames is None:
        keep_frames = crop is None  # the build's first extract pass decides (see Extract.keep_frames)
    options = {
        "sampling": sampling,
        "extract.backends": list(backends) if backends is not None else None,
        "extract.png_level": png_level,
        "extract.keep_frames": keep_frames,
    }
    return run_stage(
        ExtractStage(Path(root) if root else None, crop),
        build,
        part=part,
        workers=workers,
        stall_seconds=stall_seconds,
        retry_statuses=[status.value for status in FAILED] if retry_failed else (),
        options=options,
        show_progress=show_progress,
        flush_seconds=flush_seconds,
    )
