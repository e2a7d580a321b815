"""The stage engine: one way to run a stage over the items (videos) of a build.

A stage says what its items are made from (`Stage.plan`), how to turn items into worker tasks,
and what rows a failure leaves. The engine owns everything else: the build's recipe, part
selection, the per-stage lock, the ledger, resume, stalled workers, the missing-input policy,
progress, the run log and the merge.

Provenance: every row carries `made_from`, a digest of what its item was made from (the stage's
settings and the item's upstream rows). An item is done only while its rows' digest equals the
one its inputs give now, so a changed input, a changed setting or a re-indexed video is redone,
and an item that left the build is dropped with its files at the merge. A stage reads its
upstream table only when that table is current all the way up (`current_table`), so no stage
ever serves stale data.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ffx.errors import BuildError, os_error_line
from ffx.pipeline.engine import atomic, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.identity import digest
from ffx.pipeline.engine.lock import hold_lock
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.registry import INDEX, command_of, make_stage, upstream_chain
from ffx.pipeline.engine.statuses import FAILED, BadInput, Status
from ffx.pipeline.engine.workers import Stalled, available_cores, call_guarded, run_tasks
from ffx.pipeline.recipe.manifest import Manifest, load_manifest, manifest_changes, manifest_to_toml

MADE_FROM = "made_from"


def rows_by_key(table: pa.Table) -> dict[str, list[dict]]:
    """A table's rows grouped by item key, in table order."""
    grouped: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        grouped.setdefault(row["key"], []).append(row)
    return grouped


@dataclass
class Plan:
    """What a stage's table must hold now. A stage's own plan (a subclass) also carries what its
    tasks are built from for this run (the upstream rows, each video's path, ...): the Stage object
    holds only its options."""

    made_from: dict[str, str]  # every item of the build -> digest of what it is made from
    blocked: dict[str, list[dict]] = field(default_factory=dict)  # items with rows but no task
    group_of: dict[str, str] | None = None  # items that must land in one part


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

    def outputs(self, plan: Plan, build: BuildDir, key: str, rows: list[dict]) -> list[Path]:
        """The files an item's rows say it wrote (an item whose files are gone is redone)."""
        return [build.root / row["path"] for row in rows if row.get("path")]

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


# --- the build's recipe -------------------------------------------------------------------------


def load_recipe(build: BuildDir) -> Manifest:
    """The build's effective recipe (BUILD/manifest.toml): the one truth of its settings."""
    if not build.manifest.is_file():
        raise BuildError(f"{build.manifest} not found: run `ffx index` first")
    return load_manifest(build.manifest)


def write_recipe(build: BuildDir, recipe: Manifest) -> None:
    """Make `recipe` the build's effective recipe (BUILD/manifest.toml and its sha256 in
    index.json); the stages then redo exactly the items the changed fields shape."""
    atomic.write_bytes(build.manifest, manifest_to_toml(recipe).encode())
    index = json.loads(build.index.read_text(encoding="utf-8"))
    atomic.write_json(build.index, index | {"manifest_sha256": recipe.digest()})


# --- currency ----------------------------------------------------------------------------------


@dataclass
class Currency:
    """How a stage's merged table compares with what its inputs give now."""

    current: int = 0
    stale: int = 0  # rows made from other inputs or settings
    missing: int = 0  # items without rows
    gone: int = 0  # rows of items no longer in the build
    upstream: str = ""  # why the inputs cannot be known (an upstream table out of date)

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing or self.gone or self.upstream)


def made_from_per_key(table: pa.Table) -> dict[str, str]:
    keys, made = table.column("key").to_pylist(), table.column(MADE_FROM).to_pylist()
    return dict(zip(keys, made))


def compare(plan: Plan, rows: pa.Table) -> Currency:
    """Count current, stale, missing and gone items of `rows` against `plan`."""
    made = made_from_per_key(rows)
    currency = Currency()
    for key, wanted in plan.made_from.items():
        if key not in made:
            currency.missing += 1
        elif made[key] == wanted:
            currency.current += 1
        else:
            currency.stale += 1
    currency.gone = len(set(made) - set(plan.made_from))
    return currency


# (build, stage) -> the files its currency depends on, as they were, and what it was then.
_currency_memo: dict[tuple[str, str], tuple[tuple, Currency, pa.Table | None]] = {}


def _chain_state(build: BuildDir, name: str) -> tuple:
    """Identity of the files a stage's currency depends on: the recipe and every merged table up to
    its own. Tables are only ever replaced by a rename, so inode, mtime and size tell a change."""
    state = []
    for path in [build.manifest, *(build.table(stage) for stage in upstream_chain(name))]:
        try:
            facts = path.stat()
            state.append((facts.st_ino, facts.st_mtime_ns, facts.st_size))
        except OSError:
            state.append(None)
    return tuple(state)


def table_currency(build: BuildDir, name: str) -> tuple[Currency, pa.Table | None]:
    """The merged table of stage `name` (None if absent) and how current it is. Remembered while
    none of the files it depends on changes: a command asks several times (a whole chain each)."""
    state = _chain_state(build, name)
    memo = _currency_memo.get((str(build.root.resolve()), name))
    if memo is not None and memo[0] == state:
        return memo[1], memo[2]
    currency, table = _table_currency(build, name)
    remember_currency(build, name, currency, table, state)
    return currency, table


def remember_currency(
    build: BuildDir, name: str, currency: Currency, table: pa.Table | None, state: tuple | None = None
) -> None:
    """Remember how current stage `name`'s merged table is (a run of the stage that found it
    current tells, so the stages after it need not plan it again)."""
    state = _chain_state(build, name) if state is None else state
    _currency_memo[(str(build.root.resolve()), name)] = (state, currency, table)


def _table_currency(build: BuildDir, name: str) -> tuple[Currency, pa.Table | None]:
    stage = make_stage(name)
    path = build.table(name)
    try:
        plan = stage.plan(build, load_recipe(build))
    except BuildError as error:
        table = store.read_table(path, f"`{stage.command}`") if path.is_file() else None
        return Currency(upstream=str(error)), table
    if not path.is_file():
        return Currency(missing=len(plan.made_from)), None
    table = store.read_table(path, f"`{stage.command}`")
    return compare(plan, table), table


def current_table(build: BuildDir, name: str) -> pa.Table:
    """Stage `name`'s table, once it is merged and current all the way up; else a one-line
    BuildError saying what is out of date and which command brings it up to date."""
    if name == INDEX:
        from ffx.pipeline.recipe.schema import VIDEOS_SCHEMA

        videos = store.read_table(build.videos, f"`{command_of(INDEX)}`")
        if missing := set(VIDEOS_SCHEMA.names) - set(videos.column_names):
            raise BuildError(
                f"{build.videos} was written by an older ffx (no {', '.join(sorted(missing))}): "
                "run `ffx index` again with the build's recipe"
            )
        return videos
    stage = make_stage(name)
    path = build.table(name)
    currency, table = table_currency(build, name)
    if currency.upstream:
        raise BuildError(currency.upstream)
    if table is None:
        raise BuildError(f"{path} not found: run `{stage.command} {build}` (every part) first")
    if not currency.ok:
        facts = [
            f"{count} {what}"
            for count, what in (
                (currency.stale, "made from other inputs or settings"),
                (currency.missing, "not done"),
                (currency.gone, "no longer indexed"),
            )
            if count
        ]
        raise BuildError(
            f"{path} is out of date ({', '.join(facts)} of its videos): run `{stage.command} {build}` "
            "(every part), or `ffx build`"
        )
    return table


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
) -> tuple[pa.Table, list[str], list[str], set[str]]:
    """The ledger's rows so far, this part's items, those to do now, and those redone although
    their inputs did not change: a status asked to be retried, output files that are gone, or a
    `missing` input that is back."""
    done_rows = ledger.rows(part)
    made = made_from_per_key(done_rows)
    keys = part.select(list(plan.made_from), plan.group_of)
    rows_of = rows_by_key(done_rows)
    redo = set()
    listings: dict[Path, set[str]] = {}  # one listing per folder for the whole pass
    for key in keys:
        rows = rows_of.get(key)
        if rows is None or made.get(key) != plan.made_from[key]:
            continue
        statuses = {row["status"] for row in rows}
        if (
            statuses & retry
            or not _all_present(stage.outputs(plan, build, key, rows), listings)
            or (
                Status.MISSING.value in statuses
                and key not in plan.blocked
                and stage.inputs_present(plan, build, key)
            )
        ):
            redo.add(key)
    todo = [key for key in keys if made.get(key) != plan.made_from[key] or key in redo]
    return done_rows, keys, todo, redo


def _all_present(paths: list[Path], listings: dict[Path, set[str]]) -> bool:
    """Whether every file exists: one directory listing per folder rather than a stat per file
    (on a cluster file system each stat is a round trip). `listings` keeps them for the whole pass:
    items that share a folder (every video's samples lie in samples/) list it once, so a rerun
    with nothing to do stays linear in the number of items."""
    for path in paths:
        if path.parent not in listings:
            try:
                listings[path.parent] = set(os.listdir(path.parent))
            except OSError:
                listings[path.parent] = set()  # a folder that is gone holds nothing
        if path.name not in listings[path.parent]:
            return False
    return True


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
    if not changes:
        plan = stage.plan(build, recipe)
        done_rows, keys, todo, redo = _todo(stage, build, plan, ledger, part, retry)
        currency = compare(plan, done_rows)
        if not todo and not ledger.parts_dir.exists() and currency.ok:
            # Nothing to do and nothing to merge: touch nothing, so a read-only build reruns cleanly.
            remember_currency(build, stage.name, currency, done_rows)
            report.items = report.skipped = len(keys)
            report.merged = True
            return report
    companion = stage.companion
    with hold_lock(build, stage.name, part), _maybe_lock(build, companion, part):
        if changes:
            write_recipe(build, wanted)
            recipe = wanted
            plan = stage.plan(build, recipe)
        done_rows, keys, todo, redo = _todo(stage, build, plan, ledger, part, retry)  # may have moved on
        made = made_from_per_key(done_rows)
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
            store.log_run(build.root, name, part, report.seconds, len(todo))
    report.merged, report.dropped = merge_when_current(stage, build, ledger, plan, part)
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
    stage: Stage, build: BuildDir, ledger: store.Ledger, plan: Plan, part: Part
) -> tuple[bool, int]:
    """Merge the table once every item of the build has current rows (whichever part gets there
    last; a lock keeps two parts from merging at once). Items that left the build are dropped,
    with their files. Returns (merged, items dropped).

    `part` has just brought its items up to date: it leaves a marker naming the plan, and only a
    part that finds every part of its count marked for the same plan reads the ledger's rows. The
    others read no other part's rows, so N parts do not read the whole ledger N times."""
    build.root.mkdir(parents=True, exist_ok=True)
    if ledger.parts_dir.exists():
        plan_id = plan_digest(plan)
        ledger.mark_done(part, plan_id)
        if not ledger.all_done(part.count, plan_id):
            return False, 0
    with open(build.merge_lock(stage.name), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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
        return True, len(gone)
