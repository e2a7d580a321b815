"""The stage engine: one way to run a stage over the items (videos) of a build.

A stage says what its items are made from (`Stage.plan`), how to turn items into worker tasks,
and what rows a failure leaves. The engine owns everything else: the build's recipe, part
selection, the per-stage lock, the ledger, resume, stalled workers, the missing-input policy,
progress, the run log and the merge.

Provenance: every row carries `made_from`, a digest of what its item was made from (the stage's
settings and the item's upstream rows). An item is done only while its rows' digest equals the
one its inputs give now, so a changed input, a changed setting or a re-indexed video is redone,
and an item that left the build is dropped with its files at the merge. Whether a table is
current, and the build's recipe, are `currency`'s.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ffx.errors import BuildError, os_error_line
from ffx.pipeline.engine import memo, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import (
    MADE_FROM,
    Plan,
    apply_options,
    chain_files,
    chain_states,
    compare,
    current_fact,
    load_recipe,
    made_from_per_key,
    remember_currency,
)
from ffx.pipeline.engine.identity import digest
from ffx.pipeline.engine.lock import exclusive, hold_lock
from ffx.pipeline.engine.memo import file_states
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.rows import RowsByKey
from ffx.pipeline.engine.statuses import FAILED, BadInput, Status
from ffx.pipeline.engine.workers import Stalled, available_cores, call_guarded, run_tasks
from ffx.pipeline.recipe.manifest import Manifest, load_manifest, manifest_changes

OUTPUTS_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string())])  # Stage.outputs
OUTPUT_BATCH_ROWS = 262_144  # output files checked at once (_outputs_gone)
LISTINGS_KEPT = 256  # folder listings kept while checking them


@dataclass(frozen=True)
class BuildOptions:
    """What `ffx build` passes to each stage it runs (`Stage.build_step`)."""

    part: Part
    workers: int | None = None
    device: str = "auto"
    keep_frames: bool | None = None
    show_progress: bool = True


class Stage:
    """What a stage supplies to the engine: a class registered with `@register_stage` that sets the
    class attributes and the methods that raise NotImplementedError; the others are hooks with the
    usual behaviour. Methods that need this run's facts get the run's `plan`."""

    name: str  # the table it writes: frames, faces, samples
    upstream: str  # the table it is made from: videos, frames, faces
    command: str  # the command that runs it: ffx extract, ...
    unit: str  # what its rows are: frames, faces, samples
    schema: pa.Schema
    sort_by: tuple[str, ...]
    array: bool = True  # `ffx slurm` runs it as an array of parts
    reads_videos: bool = False  # its command reads the videos and takes `--root` (another mount path)
    device: str = ""  # the device its work runs on, where it has one (crop: the detector's)
    # The next stage, when this stage's workers also produce its rows (`ffx build` crops the frames
    # it decodes): they go into its ledger, `made_from` set by the worker, and that stage then
    # finds those items current.
    companion: Stage | None = None

    @property
    def verb(self) -> str:
        """The command's last word: extract, crop, shard."""
        return self.command.split()[-1]

    def plan(self, build: BuildDir, recipe: Manifest) -> Plan:
        raise NotImplementedError

    def tasks(
        self, plan: Plan, build: BuildDir, recipe: Manifest, keys: list[str], done: pa.Table, workers: int
    ) -> list:
        """Worker tasks for `keys` (each task has `.key`) for `workers` processes; `done` holds
        the current rows of the items this run does not redo."""
        raise NotImplementedError

    @staticmethod
    def worker(task, report) -> Any:
        raise NotImplementedError

    def failure_rows(self, plan: Plan, key: str, status: Status, error: str) -> list[dict]:
        """The single row of an item that produced nothing."""
        raise NotImplementedError

    def remove_outputs(self, build: BuildDir, key: str) -> None:
        """Delete an item's files (it left the build)."""
        raise NotImplementedError

    @classmethod
    def build_step(cls, build: Path, options: BuildOptions) -> StageReport:
        """Run this stage as a step of `ffx build`."""
        raise NotImplementedError

    def workers(self, requested: int | None, cores: int) -> int:
        return requested or cores

    def made(self, recipe: Manifest) -> str:
        """What happened to this run's outputs, for its report: written (or decoded, ...)."""
        return "written"

    def has_output(self, row: dict) -> bool:
        """Whether a row stands for something made (a frame, a crop, a sample), not a reason."""
        return bool(row.get("path"))

    def outputs(self, plan: Plan, build: BuildDir, rows: pa.Table) -> pa.Table:
        """The files the rows say were written, as a table of `key` and `path` (relative to the
        build, or absolute): an item whose files are gone is redone. By default each row's
        `path`, where the stage's rows have one."""
        if "path" not in rows.column_names:
            return OUTPUTS_SCHEMA.empty_table()
        named = pc.invert(pc.equal(pc.fill_null(rows.column("path"), ""), ""))
        return rows.select(["key", "path"]).filter(named)  # two columns filtered, not every one

    def files_read(self, recipe: Manifest) -> list[Path]:
        """Files outside the build that its plan reads (a landmark model of the user's own): what
        is remembered about its table holds only while they are unchanged too."""
        return []

    def inputs_present(self, plan: Plan, build: BuildDir, key: str) -> bool:
        """Whether an item recorded `missing` can be tried again: the files it lacked are back."""
        return False

    def result_rows(self, task, result, report: StageReport) -> list[dict]:
        """The rows of a finished task (a stage may count extra figures into `report.counts`)."""
        return result

    def companion_rows(self, task, result) -> list[dict]:
        """The companion stage's rows of a finished task (none: that stage does the item itself)."""
        return []

    def stalled_rows(self, plan: Plan, task, stalled: Stalled) -> list[dict]:
        status = Status.TIMEOUT if stalled.hung else Status.ERROR
        return self.failure_rows(plan, task.key, status, f"{self.verb} worker: {stalled.reason}")

    def retry(self, task, stalled: Stalled):
        """A follow-up task for a hung or dead worker's task, or None to record it as failed."""
        return None

    def follow_up(self, plan: Plan, task, result) -> list:
        """Tasks that could only start once `task` finished (run in the same pool)."""
        return []


@dataclass
class StageReport:
    """What one run of a stage did."""

    stage: str
    unit: str
    items: int = 0  # in this part
    skipped: int = 0  # already current before this run
    redone: int = 0  # had rows made from other inputs or settings
    dropped: int = 0  # left the build: rows and files removed at the merge
    items_by_status: Counter = field(default_factory=Counter)  # items of this run, once per status
    rows_by_status: Counter = field(default_factory=Counter)  # rows of this run per status
    outputs: int = 0  # frames, crops or samples made by this run
    made: str = "written"  # what was done with them (frames not kept are "decoded")
    counts: Counter = field(default_factory=Counter)  # a stage's own figures (boxes reused, ...)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, status, error)
    seconds: float = 0.0
    merged: bool = False  # the stage's table holds every item of the build, current
    extra: dict = field(default_factory=dict)  # a stage's own results (shard: the shard index)

    @property
    def done_now(self) -> int:
        return self.items - self.skipped

    def add(self, key: str, rows: list[dict], has_output) -> None:
        statuses = [row["status"] for row in rows]
        self.items_by_status.update(set(statuses))
        self.rows_by_status.update(statuses)
        made = sum(1 for row in rows if has_output(row))
        self.outputs += made
        bad = [row for row in rows if row["status"] in FAILED]
        if bad or not made:
            reason = (bad or rows)[0]
            self.failed.append((key, reason["status"], reason["error"]))


# --- running a stage ---------------------------------------------------------------------------


def run_stage(
    stage: Stage,
    build: Path | BuildDir,
    *,
    part: Part | None = None,
    workers: int | None = None,
    stall_seconds: float = 300.0,
    retry_statuses: Iterable[str] = (),
    options: dict[str, Any] | None = None,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
) -> StageReport:
    """Bring this part of `stage`'s table up to date, then merge it once every part is.

    `options` are recipe fields (dotted names; None = not given) that this run writes into
    BUILD/manifest.toml, under the stage's lock: a run that is refused changes nothing.

    The engine's error boundary: an output that cannot be written (disk full, read-only folder)
    stops the run with one line naming the file; finished items stay recorded."""
    build, part = BuildDir(build), part or Part()
    given = {name: value for name, value in (options or {}).items() if value is not None}
    try:
        return _run_stage(
            stage,
            build,
            part,
            workers,
            stall_seconds,
            set(retry_statuses),
            given,
            show_progress,
            flush_seconds,
        )
    except OSError as error:
        raise BuildError(os_error_line(error)) from error


def _todo(
    stage: Stage, build: BuildDir, plan: Plan, ledger: store.Ledger, part: Part, retry: set[str]
) -> tuple[pa.Table, dict[str, str], list[str], list[str], set[str]]:
    """The ledger's rows so far and each item's `made_from` in them, this part's items, those to do
    now, and those redone although their inputs did not change: a status asked to be retried,
    output files that are gone, or a `missing` input that is back. Read from the rows as columns:
    at DFDC's size a ledger holds 3.6 M rows."""
    done_rows = ledger.rows(part)
    rows_of = RowsByKey(done_rows)
    made = rows_of.first(MADE_FROM)
    keys = part.select(list(plan.made_from), plan.group_of)
    current = {key for key in keys if made.get(key) == plan.made_from[key]}
    statuses = rows_of.table.column("status")
    redo = set()
    if retry:
        redo |= current & rows_of.keys_where(pc.is_in(statuses, pa.array(sorted(retry), pa.string())))
    back = current & rows_of.keys_where(pc.equal(statuses, Status.MISSING.value))
    redo |= {key for key in back if key not in plan.blocked and stage.inputs_present(plan, build, key)}
    skipped = set(rows_of) - (current - redo)  # not current, or redone already: no need to look
    redo |= _outputs_gone(build, stage.outputs(plan, build, rows_of.table), skipped)
    todo = [key for key in keys if key not in current or key in redo]
    return done_rows, made, keys, todo, redo


def _outputs_gone(build: BuildDir, outputs: pa.Table, skipped: set[str]) -> set[str]:
    """The items with an output file that is not there, but for those `skipped`. One directory
    listing per folder rather than a stat per file (on a cluster file system each stat is a round
    trip): items that share a folder (every video's samples lie in samples/) list it once, so a
    rerun with nothing to do stays linear in the number of items. The names are split and grouped
    by Arrow and checked a folder at a time, a batch of rows at a time (3.6 M crops at DFDC's
    size); the last listings are kept, not all (120 000 folders of 30 names)."""
    if skipped:
        outputs = outputs.filter(pc.invert(pc.is_in(outputs.column("key"), pa.array(sorted(skipped)))))
    root, listings, gone = os.fspath(build.root), OrderedDict(), set()
    for batch in outputs.to_batches(OUTPUT_BATCH_ROWS):
        paths = batch.column("path")
        folders = pc.replace_substring_regex(paths, r"(^|/)[^/]*$", "")
        names = pc.replace_substring_regex(paths, r"(?s)^.*/", "").to_pylist()  # a name may hold \n
        starts = [0, *pc.add(pc.indices_nonzero(pc.not_equal(folders[1:], folders[:-1])), 1).to_pylist()]
        runs = zip(folders.take(pa.array(starts)).to_pylist(), starts, [*starts[1:], len(names)])
        for folder, start, stop in runs:  # the rows of one folder
            if folder not in listings:
                try:
                    listings[folder] = set(os.listdir(os.path.join(root, folder)))
                except OSError:
                    listings[folder] = set()  # a folder that is gone holds nothing
                if len(listings) > LISTINGS_KEPT:
                    listings.popitem(last=False)
            listing = listings[folder]
            if not listing.issuperset(names[start:stop]):
                keys = batch.column("key").slice(start, stop - start).to_pylist()
                gone.update(key for key, name in zip(keys, names[start:stop]) if name not in listing)
    return gone


def _run_stage(
    stage: Stage,
    build: BuildDir,
    part: Part,
    workers: int | None,
    stall_seconds: float,
    retry: set[str],
    options: dict[str, Any],
    show_progress: bool,
    flush_seconds: float,
) -> StageReport:
    recipe = load_recipe(build)
    report = StageReport(stage.name, stage.unit)
    ledger = store.Ledger(build.root, stage.name, stage.schema, stage.sort_by)
    wanted = load_manifest(build.manifest, options) if options else recipe
    changes = manifest_changes(recipe, wanted)
    state = chain_states(build, stage.name)  # before any of those files is read
    if not changes:
        plan = stage.plan(build, recipe)
        done_rows, made, keys, todo, redo = _todo(stage, build, plan, ledger, part, retry)
        currency = compare(plan, made)
        if not todo and not ledger.parts_dir.exists() and currency.ok:
            # Nothing to do and nothing to merge: touch nothing, so a read-only build reruns cleanly.
            remember_currency(build, stage.name, currency, state)
            report.items = report.skipped = len(keys)
            report.merged = True
            return report
    companion = stage.companion
    with hold_lock(build, stage.name, part), _maybe_lock(build, companion, part):
        if changes:
            recipe = apply_options(build, options)
            state = chain_states(build, stage.name)
            plan = stage.plan(build, recipe)
        # The ledger may have moved on since the check above.
        done_rows, made, keys, todo, redo = _todo(stage, build, plan, ledger, part, retry)
        report.items, report.skipped = len(keys), len(keys) - len(todo)
        report.made = stage.made(recipe)
        report.redone = sum(1 for key in todo if key in made and key not in redo)
        has_output = stage.has_output
        with (
            stage_progress(stage.verb, len(todo), "videos", stage.unit, show_progress) as progress,
            ledger.writer(part, flush_seconds=flush_seconds) as writer,
            _companion_writer(build, companion, part, flush_seconds) as companion_writer,
        ):

            def record(key: str, rows: list[dict]) -> None:
                for row in rows:
                    row[MADE_FROM] = plan.made_from[key]
                writer.add_item(rows)
                report.add(key, rows, has_output)
                progress.advance(1, sum(1 for row in rows if has_output(row)))

            for key in todo:
                if key in plan.blocked:
                    record(key, [dict(row) for row in plan.blocked[key]])
            runnable = [key for key in todo if key not in plan.blocked]
            processes = stage.workers(workers, available_cores())
            done = _kept_rows(done_rows, made, plan, set(todo))
            tasks = stage.tasks(plan, build, recipe, runnable, done, processes) if runnable else []
            function = functools.partial(call_guarded, type(stage).worker)
            results = run_tasks(
                function,
                tasks,
                processes,
                stall_seconds,
                retry=stage.retry,
                follow_up=functools.partial(stage.follow_up, plan),
            )
            for task, result in results:
                if isinstance(result, Stalled):
                    rows = stage.stalled_rows(plan, task, result)
                elif isinstance(result, BadInput):
                    rows = stage.failure_rows(plan, task.key, result.status, str(result))
                else:
                    rows = stage.result_rows(task, result, report)
                    if extra := stage.companion_rows(task, result):
                        companion_writer.add_item(extra)
                record(task.key, rows)
        report.seconds = progress.elapsed
        if todo:
            # A pass that also made the companion's rows is timed as both (`frames+faces`).
            name = stage.name if companion is None else f"{stage.name}+{companion.name}"
            device = stage.device or (companion.device if companion is not None else "")
            store.log_run(build.root, name, part, report.seconds, len(todo), device)
    report.merged, report.dropped = merge_when_current(stage, build, ledger, plan, part, state)
    return report


def plan_digest(plan: Plan) -> str:
    """A short digest of what every item of the build is made from now (a part marker's name)."""
    return digest(sorted(plan.made_from.items()))[:16]


def _kept_rows(rows: pa.Table, made: dict[str, str], plan: Plan, todo: set[str]) -> pa.Table:
    """The rows of the items this run keeps: current, and not redone."""
    keys = rows.column("key").to_pylist()
    keep = [key not in todo and made.get(key) == plan.made_from.get(key) for key in keys]
    return rows.filter(pa.array(keep, pa.bool_()))


def _maybe_lock(build: BuildDir, stage: Stage | None, part: Part):
    """The companion stage's lock for this part: no `ffx crop` of it runs while its rows are made."""
    return hold_lock(build, stage.name, part) if stage is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _companion_writer(build: BuildDir, stage: Stage | None, part: Part, flush_seconds: float):
    if stage is None:
        yield None
        return
    ledger = store.Ledger(build.root, stage.name, stage.schema, stage.sort_by)
    with ledger.writer(part, flush_seconds=flush_seconds) as writer:
        yield writer


def merge_when_current(
    stage: Stage, build: BuildDir, ledger: store.Ledger, plan: Plan, part: Part, state: list
) -> tuple[bool, int]:
    """Merge the table once every item of the build has current rows (whichever part gets there
    last; a lock keeps two parts from merging at once). Items that left the build are dropped,
    with their files. Returns (merged, items dropped). The merged table is then known current
    over the files the plan was made from (`state`, taken before they were read).

    `part` has just brought its items up to date: it leaves a marker naming the plan, and only a
    part that finds every part of its count marked for the same plan reads the ledger's rows. The
    others read no other part's rows, so N parts do not read the whole ledger N times."""
    build.root.mkdir(parents=True, exist_ok=True)
    if ledger.parts_dir.exists():
        plan_id = plan_digest(plan)
        ledger.mark_done(part, plan_id)
        if not ledger.all_done(part.count, plan_id):
            return False, 0
    with exclusive(build.merge_lock(stage.name), part=part.name) as held:
        if not held:
            return False, 0  # another part is merging right now
        rows = ledger.rows()
        made = made_from_per_key(rows)
        if any(made.get(key) != wanted for key, wanted in plan.made_from.items()):
            return False, 0
        gone = sorted(set(made) - set(plan.made_from))
        if gone or ledger.parts_dir.exists() or not ledger.table_path.is_file():
            keep = pa.array([key in plan.made_from for key in rows.column("key").to_pylist()], pa.bool_())
            ledger.write_merged(rows.filter(keep))
            for key in gone:
                stage.remove_outputs(build, key)
        if ledger.parts_dir.exists():
            shutil.rmtree(ledger.parts_dir)
        # What the plan was made from, with the table as merged now in its own place.
        merged = list(state)
        merged[chain_files(build, stage.name).index(ledger.table_path)] = file_states([ledger.table_path])[0]
        memo.remember(build, current_fact(stage.name), merged, len(plan.made_from))
        return True, len(gone)
