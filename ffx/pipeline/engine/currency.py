"""Whether a stage's table is current: what each item must be made from now (a stage's `Plan`),
how its merged table compares, and the build's recipe those plans read.

A stage reads its upstream table only when that table is current all the way up (`current_table`),
so no stage ever serves stale data. What was found is remembered while the files it was drawn
from are unchanged (in the process, and on disk through `memo`), so a command that asks for a
whole chain, and the command after it, do not plan every stage again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ffx.errors import BuildError
from ffx.pipeline.engine import atomic, memo, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.lock import exclusive
from ffx.pipeline.engine.memo import file_states
from ffx.pipeline.engine.registry import INDEX, command_of, make_stage, upstream_chain
from ffx.pipeline.engine.rows import RowsByKey
from ffx.pipeline.recipe.manifest import Manifest, load_manifest, manifest_to_toml

MADE_FROM = "made_from"


@dataclass
class Plan:
    """What a stage's table must hold now. A stage's own plan (a subclass) also carries what its
    tasks are built from for this run (the upstream rows, each video's path, ...): the Stage object
    holds only its options."""

    made_from: dict[str, str]  # every item of the build -> digest of what it is made from
    blocked: dict[str, list[dict]] = field(default_factory=dict)  # items with rows but no task
    group_of: dict[str, str] | None = None  # items that must land in one part


# --- the build's recipe -------------------------------------------------------------------------


def load_recipe(build: BuildDir) -> Manifest:
    """The build's effective recipe (BUILD/manifest.toml): the one truth of its settings."""
    if not build.manifest.is_file():
        raise BuildError(f"{build.manifest} not found: run `ffx index` first")
    return load_manifest(build.manifest)


def write_recipe(build: BuildDir, recipe: Manifest) -> None:
    """Make `recipe` the build's effective recipe (BUILD/manifest.toml and its sha256 in
    index.json), under the recipe's lock; the stages then redo exactly the items the changed
    fields shape."""
    with exclusive(build.recipe_lock, wait=True):
        _write_recipe(build, recipe)


def apply_options(build: BuildDir, options: dict[str, Any]) -> Manifest:
    """Apply a stage's options (recipe fields: `crop.size` = 128) to the build's recipe and return
    it. The recipe is read and written under its lock, so two stages changing other fields at
    once (on two nodes) both keep their change."""
    with exclusive(build.recipe_lock, wait=True):
        recipe = load_manifest(build.manifest, options)
        _write_recipe(build, recipe)
    return recipe


def _write_recipe(build: BuildDir, recipe: Manifest) -> None:
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
    """Each item's `made_from` (the same on every row of an item: they are written together)."""
    return RowsByKey(table).first(MADE_FROM)


def compare(plan: Plan, made: dict[str, str]) -> Currency:
    """Count current, stale, missing and gone items of a table (each item's `made_from`, as
    `made_from_per_key` gives) against `plan`."""
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
_currency_memo: dict[tuple[str, str], tuple[list, Currency]] = {}


def chain_files(build: BuildDir, name: str) -> list[Path]:
    """The files a stage's currency depends on: the recipe, every merged table from the index down
    to its own, and the files outside the build that those stages' plans read (`Stage.files_read`)."""
    chain = upstream_chain(name)
    files = [build.manifest, *(build.table(stage) for stage in chain)]
    if build.manifest.is_file():
        recipe = load_recipe(build)
        files += [path for stage in chain[1:] for path in make_stage(stage).files_read(recipe)]
    return files


def chain_states(build: BuildDir, name: str) -> list:
    """The state of `chain_files` (`memo.file_states`)."""
    return file_states(chain_files(build, name))


def current_fact(name: str) -> str:
    return f"{name}.current"


def stage_currency(build: BuildDir, name: str) -> Currency:
    """How current stage `name`'s merged table is. Remembered while none of the files it depends
    on changes: a command asks several times (a whole chain each), and a table found current stays
    known as such on disk (`memo`) for the commands after it, which then need not read it."""
    state = chain_states(build, name)
    known = _currency_memo.get((str(build.root.resolve()), name))
    if known is not None and known[0] == state:
        return known[1]
    currency = _table_currency(build, name, state)
    remember_currency(build, name, currency, state)
    return currency


def remember_currency(build: BuildDir, name: str, currency: Currency, state: list) -> None:
    """Remember how current stage `name`'s merged table is, found from its files in `state`
    (taken before they were read): a run of the stage that found it current tells, so the stages
    after it, and the next command, need not plan it again."""
    _currency_memo[(str(build.root.resolve()), name)] = (state, currency)
    if currency.ok:
        memo.remember(build, current_fact(name), state, currency.current)


def proven_made_from(build: BuildDir, name: str, recipe: Manifest) -> dict[str, str] | None:
    """What each item of stage `name` is made from under the build's own recipe (`recipe`, when it
    is that), when its merged table was found current over its files as they are now: a plan takes
    it rather than digest every upstream row again (at DFDC's size, 3.6 M rows a table). None when
    that is not known."""
    state = chain_states(build, name)
    if recipe.digest() != load_recipe(build).digest():
        return None  # a plan for other settings than the build's
    known = _currency_memo.get((str(build.root.resolve()), name))
    found_now = known is not None and known[0] == state and known[1].ok
    if not found_now and memo.recall(build, current_fact(name), state) is None:
        return None
    table = store.read_table(build.table(name), f"`{command_of(name)}`")
    return RowsByKey(table).first(MADE_FROM)


def _table_currency(build: BuildDir, name: str, state: list) -> Currency:
    stage = make_stage(name)
    path = build.table(name)
    current = memo.recall(build, current_fact(name), state)
    if current is not None and path.is_file():
        return Currency(current=current)
    try:
        plan = stage.plan(build, load_recipe(build))
    except BuildError as error:
        return Currency(upstream=str(error))
    if not path.is_file():
        return Currency(missing=len(plan.made_from))
    return compare(plan, made_from_per_key(store.read_table(path, f"`{stage.command}`")))


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
    currency = stage_currency(build, name)
    if currency.upstream:
        raise BuildError(currency.upstream)
    if not path.is_file():
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
    return store.read_table(path, f"`{stage.command}`")
