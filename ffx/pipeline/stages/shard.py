"""`ffx shard`: every face crop in the chosen colour spaces, packed into deterministic WebDataset tars.

Two steps. First, per video (worker processes, resumable, split into parts: the engine runs it),
each crop is converted and PNG-encoded once per colour space (or, with the recipe's
`[shard] stored_spaces = "rgb"`, kept as its RGB PNG alone: ffx's loader derives the other spaces
exactly) and its tar records go to `BUILD/samples/{key}.tar`; samples.parquet records where each
sample lies and its exact size.
Then, once every part is done, one process lays the samples out: per split in a seeded hash
order that mixes videos, cut into shards by count and by bytes, each shard the concatenation of
its samples' records (copied, not encoded again), written under a temporary name, hashed and
renamed. The layout depends only on the samples and the settings, so one run and any number of
parts give byte-identical shards. An existing shard is kept only if its size and sha256 are
those recorded when it was written for the same layout; anything else is written again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ffx.errors import BuildError
from ffx.pipeline.engine import atomic, memo, store
from ffx.pipeline.engine.builddir import BuildDir, samples_name
from ffx.pipeline.engine.currency import Plan, chain_states, current_table, load_recipe, proven_made_from
from ffx.pipeline.engine.identity import digest
from ffx.pipeline.engine.lock import exclusive
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.registry import register_stage
from ffx.pipeline.engine.rows import RowsByKey, rows_by_key
from ffx.pipeline.engine.stage import OUTPUTS_SCHEMA, BuildOptions, Stage, StageReport, run_stage
from ffx.pipeline.engine.statuses import NO_FRAME, NO_TRACK, BadInput, Status
from ffx.pipeline.engine.workers import Stalled, available_cores, call_guarded, run_tasks
from ffx.pipeline.media.tars import END_OF_ARCHIVE
from ffx.pipeline.recipe.manifest import Manifest, png_encoder_setting
from ffx.pipeline.recipe.schema import FACES_SCHEMA, SAMPLES_SCHEMA
from ffx.pipeline.stages.loaders import write_loader_files
from ffx.pipeline.workers.shard import SampleTask, encode_samples, face_crop, sample_row, video_facts

INDEX_FORMAT = 1
# Option names of `run_shard` -> recipe fields.
SHARD_FIELDS = {
    "spaces": "spaces",
    "max_count": "shard.max_count",
    "max_bytes": "shard.max_bytes",
    "seed": "shard.seed",
    "png_level": "shard.png_level",
    "stored_spaces": "shard.stored_spaces",
    "keep_samples": "shard.keep_samples",
    "detector_outputs": "shard.detector_outputs",
}


def stored_spaces(recipe: Manifest) -> tuple[str, ...]:
    """The spaces with a PNG in each sample: the build's `spaces`, or rgb alone."""
    return tuple(recipe.spaces) if recipe.shard.stored_spaces == "all" else ("rgb",)


def sample_task(recipe: Manifest, build: BuildDir, key: str, video: dict, crops=()) -> SampleTask:
    """How a video's samples are made (`crops` sorted by frame and track; none yet in the task
    that `ffx build`'s pass fills in from the crops it makes)."""
    return SampleTask(
        key,
        str(build),
        str(build.samples_file(key)),
        tuple(crops),
        video,
        stored_spaces(recipe),
        recipe.shard.png_level,
        recipe.shard.detector_outputs,
        recipe.png_encoder,
    )


PLAN_RECORD_SECONDS = 2.0  # how often write_shards records the shards written so far
SHARDS_LAYOUT = "shards.layout"  # the memo of the current samples' layout digest


@dataclass
class SamplePlan(Plan):
    """The plan of one shard run: each video's index facts and crop rows."""

    videos: dict[str, dict] = field(default_factory=dict)
    faces_of: RowsByKey = field(default_factory=lambda: rows_by_key(FACES_SCHEMA.empty_table()))
    keep_samples: bool = True


@register_stage
class SampleStage(Stage):
    """Faces -> samples: a video's samples are made from its crop rows, its index facts (label,
    split, ...), the spaces, the PNG level and which spaces are stored."""

    name, upstream, command, unit = "samples", "faces", "ffx shard", "samples"
    schema, sort_by = SAMPLES_SCHEMA, ("key", "frame_index", "track")

    def plan(self, build: BuildDir, recipe: Manifest) -> SamplePlan:
        faces_of = rows_by_key(current_table(build, "faces"))
        columns = current_table(build, "videos").to_pydict()
        videos = {
            key: video_facts(dict(zip(columns, values)))
            for key, values in zip(columns["key"], zip(*columns.values()))
        }
        made_from = proven_made_from(build, self.name, recipe)
        if made_from is None:
            settings = {
                "spaces": list(recipe.spaces),
                "png_level": recipe.shard.png_level,
                "detector_outputs": recipe.shard.detector_outputs,  # the JSON's floats, or not
            } | png_encoder_setting(recipe)
            if recipe.shard.stored_spaces != "all":  # absent when "all": builds made before it stay current
                settings["stored_spaces"] = recipe.shard.stored_spaces
            if not recipe.shard.keep_samples:
                # samples/ is removed once the shards are written: a new layout needs new samples.
                shard = recipe.shard
                settings["layout_without_samples"] = [shard.max_count, shard.max_bytes, shard.seed]
            crops = {key: digest([_digested(row) for row in rows]) for key, rows in faces_of.groups()}
            made_from = {
                key: digest(settings, video, crops.get(key, digest([]))) for key, video in videos.items()
            }
        table = faces_of.table
        is_crop = pc.and_(
            pc.equal(table.column("status"), Status.OK.value), pc.invert(pc.equal(table.column("path"), ""))
        )
        with_crops = faces_of.keys_where(is_crop)
        blocked = {}
        for key in videos.keys() - with_crops:
            rows = faces_of.get(key, [])
            reasons = Counter((row["status"], row["error"]) for row in rows)
            status, error = (
                reasons.most_common(1)[0][0] if rows else (Status.MISSING, "no rows in faces.parquet")
            )
            blocked[key] = _failure_rows(key, status, error, videos[key])
        return SamplePlan(made_from, blocked, None, videos, faces_of, recipe.shard.keep_samples)

    def tasks(
        self,
        plan: SamplePlan,
        build: BuildDir,
        recipe: Manifest,
        keys: list[str],
        done: pa.Table,
        workers: int,
    ) -> list:
        faces_of = plan.faces_of
        return [
            sample_task(
                recipe,
                build,
                key,
                plan.videos[key],
                sorted(
                    (face_crop(row) for row in faces_of[key] if _is_crop(row)),
                    key=lambda c: (c.frame_index, c.track),
                ),
            )
            for key in keys
        ]

    worker = staticmethod(encode_samples)

    def has_output(self, row: dict) -> bool:
        return bool(row["sample"])

    def failure_rows(self, plan: SamplePlan, key: str, status: Status | str, error: str) -> list[dict]:
        return _failure_rows(key, status, error, plan.videos[key])

    def outputs(self, plan: SamplePlan, build: BuildDir, rows: pa.Table) -> pa.Table:
        if not plan.keep_samples:  # removed after the layout on purpose
            return OUTPUTS_SCHEMA.empty_table()
        sampled = rows.column("key").filter(pc.invert(pc.equal(rows.column("sample"), ""))).to_pylist()
        keys = list(dict.fromkeys(sampled))
        paths = [samples_name(key) for key in keys]
        return pa.table([pa.array(keys, pa.string()), pa.array(paths, pa.string())], schema=OUTPUTS_SCHEMA)

    def inputs_present(self, plan: SamplePlan, build: BuildDir, key: str) -> bool:
        crops = [row for row in plan.faces_of.get(key, []) if _is_crop(row)]
        files = [row["path"] for row in crops] + [row["mask_path"] for row in crops if row["mask_path"]]
        return bool(crops) and all((build.root / path).is_file() for path in files)

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        build.samples_file(key).unlink(missing_ok=True)

    @classmethod
    def build_step(cls, build: Path, options: BuildOptions) -> StageReport:
        return run_shard(
            build, part=options.part, workers=options.workers, show_progress=options.show_progress
        )


def _failure_rows(key: str, status: Status | str, error: str, video: dict) -> list[dict]:
    """The one row of a video without samples: why, with its index facts."""
    row = sample_row(key, "", NO_FRAME, NO_TRACK, video)
    return [row | {"status": Status(status).value, "error": error}]


def _is_crop(row: dict) -> bool:
    return row["status"] == Status.OK.value and bool(row["path"])


# faces.parquet columns a crop may lack (landmarks, aligned crops, masks): empty, they stay out of
# the samples' `made_from`, so samples made before these columns existed stay current.
CROP_EXTRAS = ("dense_landmarks", "crop_matrix", "mask_path")


def _digested(row: dict) -> dict:
    return {name: value for name, value in row.items() if value or name not in CROP_EXTRAS}


def run_shard(
    build: Path,
    *,
    part: Part | None = None,
    workers: int | None = None,
    stall_seconds: float = 300.0,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
    **settings,
) -> StageReport:
    """Encode this part's videos that are not current; once all parts are, lay out and write the
    shards. `settings` (spaces, max_count, max_bytes, seed, png_level, stored_spaces) are written
    into the build's recipe first. The report's `extra` holds the shard index once the shards
    exist."""
    unknown = set(settings) - set(SHARD_FIELDS)
    if unknown:
        raise TypeError(f"run_shard got unknown settings {sorted(unknown)}")
    if isinstance(settings.get("spaces"), str):
        from ffx.pipeline.media.color import parse_spaces

        settings["spaces"] = list(parse_spaces(settings["spaces"]))
    build = BuildDir(build)
    report = run_stage(
        SampleStage(),
        build,
        part=part,
        workers=workers,
        stall_seconds=stall_seconds,
        options={SHARD_FIELDS[name]: value for name, value in settings.items()},
        show_progress=show_progress,
        flush_seconds=flush_seconds,
    )
    if report.merged:
        if build.premade_samples.exists():  # what `ffx build`'s pass made and no task took: stale
            shutil.rmtree(build.premade_samples, ignore_errors=True)
        index = shards_in_place(build)
        if index is None:
            # Two parts can both find the samples complete; one lays the shards out, the other
            # waits and then finds them written.
            with exclusive(build.shards_lock, wait=True, part=(part or Part()).name):
                started = time.monotonic()
                index, written = write_shards(build, show_progress, workers)
                report.counts["shards written"] = written
                if written:
                    store.log_run(build.root, "shards", part or Part(), time.monotonic() - started, written)
        if not load_recipe(build).shard.keep_samples and build.samples.exists():
            # The shards are written and current: samples/ has served. Removed under the layout's
            # lock (a run re-encoding dropped samples reads them there); no lock when nothing is.
            with exclusive(build.shards_lock, wait=True, part=(part or Part()).name):
                shutil.rmtree(build.samples, ignore_errors=True)
        write_loader_files(build, index)  # wids indexes and dataset card; unchanged bytes: no write
        report.extra = {"index": index}
    return report


def planned_shards(build: BuildDir, recipe: Manifest) -> tuple[list[dict], str]:
    """The shards the current samples give, and the digest of that layout (remembered, see
    `shards_layout`)."""
    states = chain_states(build, "samples")  # before any of them is read
    table = current_table(build, "samples")
    sample, status = table.column("sample"), table.column("status")
    sampled = pc.and_(pc.invert(pc.equal(sample, "")), pc.equal(status, Status.OK.value))
    columns = table.select(["key", "sample", "split", "label", "offset", "length", "sha256"]).filter(sampled)
    rows = [dict(zip(columns.column_names, values)) for values in zip(*columns.to_pydict().values())]
    shards = plan_shards(rows, recipe.shard.max_count, recipe.shard.max_bytes, recipe.shard.seed)
    layout = {
        "spaces": list(recipe.spaces),
        "png_level": recipe.shard.png_level,
        "samples_made_from": digest(sorted(set(table.column("made_from").to_pylist()))),
        "shards": [
            [shard["name"], [(row["sample"], row["length"]) for row in shard["rows"]]] for shard in shards
        ],
    }
    layout_digest = digest(layout)
    memo.remember(build, SHARDS_LAYOUT, states, {"recipe": recipe.digest(), "layout": layout_digest})
    return shards, layout_digest


def shards_layout(build: BuildDir, recipe: Manifest) -> str:
    """The digest of the layout the current samples give under `recipe`. Laying it out reads every
    sample row (3.6 M at DFDC's size), so it is remembered while the recipe and the tables up to
    samples.parquet are unchanged (the samples are current only while all of them are): a no-op
    `ffx shard`, `ffx status` and `ffx verify` read no sample row."""
    fact = memo.recall(build, SHARDS_LAYOUT, chain_states(build, "samples"))
    if isinstance(fact, dict) and fact.get("recipe") == recipe.digest():
        return fact["layout"]
    return planned_shards(build, recipe)[1]


def plan_shards(rows: list[dict], max_count: int, max_bytes: int, seed: int) -> list[dict]:
    """Shards per split: samples in seeded hash order (mixing videos), cut by count and bytes.

    The order depends only on the seed and the sample names, never on how rows were produced."""
    by_split: dict[str, list[dict]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    shards = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda row: _shuffle_key(seed, row["sample"]))
        current: list[dict] = []
        size = len(END_OF_ARCHIVE)
        for row in ordered:
            full = len(current) >= max_count or size + row["length"] > max_bytes
            if current and full:
                shards.append({"split": split, "rows": current})
                current, size = [], len(END_OF_ARCHIVE)
            current.append(row)
            size += row["length"]
        if current:
            shards.append({"split": split, "rows": current})
    per_split: Counter[str] = Counter()
    for shard in shards:  # numbered within their split: train-000000, train-000001, val-000000 ...
        shard["name"] = f"{shard['split']}-{per_split[shard['split']]:06d}.tar"
        per_split[shard["split"]] += 1
    return shards


def _shuffle_key(seed: int, sample: str) -> bytes:
    return hashlib.sha256(f"{seed}/{sample}".encode()).digest()


def write_shards(
    build: Path | BuildDir, show_progress: bool = True, workers: int | None = None
) -> tuple[dict, int]:
    """Write every planned shard that is not already there byte for byte, then shards/index.json;
    the index and how many shards were written now.

    A shard on disk is kept only if its size and sha256 equal those recorded in shards/.plan.json
    when it was written with the very same members (its samples' records, in order), whatever the
    layout then: a new video re-writes the shards of its split that change, not the others. A
    truncated, altered or foreign file is replaced, never hashed into the index. Where the samples
    were dropped (`shard.keep_samples = false`), the videos of the shards to write are encoded
    again first (the same bytes: each record is checked against its sha256)."""
    build = BuildDir(build)
    recipe = load_recipe(build)
    shards, layout = planned_shards(build, recipe)
    build.shards.mkdir(parents=True, exist_ok=True)
    names = {shard["name"] for shard in shards}
    for path in build.shards.glob("*.tar"):  # shards of an earlier layout
        if path.name not in names:
            path.unlink()
    for temp in build.shards.glob(".*.tmp"):  # left by a run killed while writing a shard
        temp.unlink()
    done = _kept_shards(build, shards, layout)
    if not recipe.shard.keep_samples:
        _encode_dropped_samples(
            build, recipe, [shard for shard in shards if shard["name"] not in done], workers
        )

    entries, written = [], 0
    total = sum(len(shard["rows"]) for shard in shards)
    recorded = time.monotonic()
    with stage_progress("pack", total, "samples", "shards", show_progress) as progress:
        for shard in shards:
            path = build.shards / shard["name"]
            facts = done.get(shard["name"])
            if facts is None:
                sha256, size = _write_shard(build, path, shard["rows"])
                facts = {"sha256": sha256, "bytes": size, "members": _members(shard)}
                written += 1
            done[shard["name"]] = facts | _file_identity(path)
            # What is written so far, every few seconds rather than after each shard (3 600 shards
            # at DFDC's size: rewriting the whole record each time would be quadratic). A shard
            # written after the last record is written again by a run that resumes.
            if time.monotonic() - recorded >= PLAN_RECORD_SECONDS:
                atomic.write_json(build.shard_plan, {"layout": layout, "written": done})
                recorded = time.monotonic()
            labels = Counter(str(row["label"]) for row in shard["rows"])
            entries.append(
                {
                    "name": shard["name"],
                    "split": shard["split"],
                    "samples": len(shard["rows"]),
                    "bytes": facts["bytes"],
                    "sha256": facts["sha256"],
                    "labels": dict(sorted(labels.items())),
                }
            )
            progress.advance(len(shard["rows"]), 1)
    atomic.write_json(build.shard_plan, {"layout": layout, "written": done})
    index = _index(entries, recipe, layout)
    atomic.write_json(build.shard_index, index)
    write_loader_files(build, index)
    return index, written


def _members(shard: dict) -> str:
    """What a shard's bytes are made of: its members' records (by their sha256), in order."""
    return digest([row["sha256"] for row in shard["rows"]])


def _kept_shards(build: BuildDir, shards: list[dict], layout: str) -> dict[str, dict]:
    """The planned shards already on disk byte for byte: recorded with the same members (or,
    recorded before members were, for this very layout) and holding the recorded bytes."""
    plan = _shard_plan(build)
    recorded = plan.get("written", {})
    kept = {}
    for shard in shards:
        facts = recorded.get(shard["name"])
        if not isinstance(facts, dict):
            continue
        members = _members(shard)
        same = facts["members"] == members if "members" in facts else plan.get("layout") == layout
        if same and _file_matches(build.shards / shard["name"], facts):
            kept[shard["name"]] = facts | {"members": members}
    return kept


def _encode_dropped_samples(
    build: BuildDir, recipe: Manifest, shards: list[dict], workers: int | None
) -> None:
    """Encode again the samples files, dropped after an earlier layout, that the shards to write
    read; a video that cannot be encoded again stops the run in one line."""
    keys = sorted({row["key"] for shard in shards for row in shard["rows"]})
    gone = [key for key in keys if not build.samples_file(key).is_file()]
    if not gone:
        return
    stage = SampleStage()
    plan = stage.plan(build, recipe)
    processes = stage.workers(workers, available_cores())
    tasks = stage.tasks(plan, build, recipe, gone, SAMPLES_SCHEMA.empty_table(), processes)
    recorded = {row["sample"]: row["sha256"] for shard in shards for row in shard["rows"]}
    function = functools.partial(call_guarded, encode_samples)
    for task, result in run_tasks(function, tasks, processes, stall_seconds=300.0):
        if isinstance(result, Stalled | BadInput):
            raise BuildError(
                f"{task.key}: its samples, dropped after an earlier layout, could not be encoded again "
                f"({result}); run `ffx shard {build} --keep-samples`"
            )
        if any(recorded.get(row["sample"], row["sha256"]) != row["sha256"] for row in result):
            raise BuildError(
                f"{task.key}: its samples, encoded again here, differ from those the shards were laid "
                "out with (another OpenCV, zlib or CPU than the first encoding); run "
                f"`ffx shard {build} --keep-samples` to encode every sample again on this machine"
            )


def shards_in_place(build: BuildDir) -> dict | None:
    """The shard index when the shards on disk are the current layout, each file untouched since
    it was written or checked (same inode, size and mtime) or, when its identity changed (a copied
    build), holding the very bytes recorded (size and sha256: hashed once, then its new identity is
    recorded where the build is writable), and nothing else lies beside them; else None. A no-op
    `ffx shard` in place reads no shard."""
    try:
        index = json.loads(build.shard_index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        return None
    layout = shards_layout(build, load_recipe(build))
    plan = _shard_plan(build)  # the shards recorded as written for this layout
    written = plan.get("written", {}) if plan.get("layout") == layout else {}
    names = {entry["name"] for entry in index.get("shards", [])}
    if index.get("layout_digest") != layout or any(name not in written for name in names):
        return None
    if any(path.name not in names for path in build.shards.glob("*.tar")):
        return None
    moved = [name for name in names if _file_identity(build.shards / name) != _identity_of(written[name])]
    if not all(_file_matches(build.shards / name, written[name]) for name in moved):
        return None
    if moved:
        for name in moved:
            written[name] = written[name] | _file_identity(build.shards / name)
        with contextlib.suppress(OSError):  # a read-only copy: checked again next time
            atomic.write_json(build.shard_plan, {"layout": layout, "written": written})
    return index


def _shard_plan(build: BuildDir) -> dict:
    """shards/.plan.json: the layout written last and the shards written; {} when there is none
    or it is not one (cut short, foreign)."""
    try:
        plan = json.loads(build.shard_plan.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) and isinstance(plan.get("written", {}), dict) else {}


def _file_identity(path: Path) -> dict:
    """What changes whenever a file is written or replaced."""
    try:
        facts = path.stat()
    except OSError:
        return {}
    return {"inode": facts.st_ino, "mtime_ns": facts.st_mtime_ns, "size": facts.st_size}


def _identity_of(facts: dict) -> dict:
    return {name: facts.get(name) for name in ("inode", "mtime_ns", "size")}


def _file_matches(path: Path, facts: dict) -> bool:
    """Whether a shard on disk holds the bytes recorded for it: by its identity when untouched
    since, else by size and sha256."""
    if _file_identity(path) == _identity_of(facts):
        return True
    try:
        return path.stat().st_size == facts["bytes"] and atomic.file_sha256(path) == facts["sha256"]
    except OSError:
        return False


def _write_shard(build: BuildDir, path: Path, rows: list[dict]) -> tuple[str, int]:
    sha256 = hashlib.sha256()
    size = 0
    with atomic.atomic_path(path) as temp, open(temp, "wb") as out:
        for row in rows:
            source = build.samples_file(row["key"])
            try:
                with open(source, "rb") as samples:
                    samples.seek(row["offset"])
                    block = samples.read(row["length"])
            except FileNotFoundError:
                if not load_recipe(build).shard.keep_samples:
                    raise BuildError(
                        f"{path} must be written again but {source} was removed after the layout "
                        f"(shard.keep_samples = false): run `ffx shard {build} --keep-samples` (it "
                        "encodes the samples again)"
                    ) from None
                raise BuildError(
                    f"{source} not found; run `ffx shard {build}` again (it redoes that video)"
                ) from None
            except OSError as error:
                raise BuildError(
                    f"{source}: {error.strerror}; run `ffx shard {build}` again (it redoes that video)"
                ) from None
            if len(block) != row["length"] or hashlib.sha256(block).hexdigest() != row["sha256"]:
                raise BuildError(
                    f"{source} was changed after `ffx shard` wrote it (sample {row['sample']}); delete "
                    f"it and run `ffx shard {build}` again: only that video is redone"
                )
            out.write(block)
            sha256.update(block)
            size += len(block)
        out.write(END_OF_ARCHIVE)
        sha256.update(END_OF_ARCHIVE)
        size += len(END_OF_ARCHIVE)
        out.flush()
    return sha256.hexdigest(), size


def _index(entries: list[dict], recipe: Manifest, layout: str) -> dict:
    splits: dict[str, dict] = {}
    for entry in entries:
        split = splits.setdefault(
            entry["split"], {"shards": 0, "samples": 0, "bytes": 0, "labels": Counter()}
        )
        split["shards"] += 1
        split["samples"] += entry["samples"]
        split["bytes"] += entry["bytes"]
        split["labels"].update(entry["labels"])
    for split in splits.values():
        split["labels"] = dict(sorted(split["labels"].items()))
    return {
        "format": INDEX_FORMAT,
        # `spaces`: what a run may ask for; `stored`: the PNGs in each sample (the loader derives
        # the others from rgb.png).
        "settings": {"spaces": list(recipe.spaces), "stored": list(stored_spaces(recipe))}
        | {"masks": recipe.crop.mask}
        | recipe.shard.model_dump(mode="json"),
        "layout_digest": layout,
        "shards": entries,
        "splits": splits,
    }
