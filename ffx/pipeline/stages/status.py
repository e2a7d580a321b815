"""`ffx status`: items per stage and status, and what is out of date, from the build's tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from ffx.errors import BuildError
from ffx.pipeline.engine import store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import Currency, compare, load_recipe, made_from_per_key, stage_currency
from ffx.pipeline.engine.registry import make_stage, stage_names


@dataclass
class StageStatus:
    """Counts of one stage: videos with rows of each status (a video with ok and no_face frames
    counts under both), rows (frames, faces) per status, whether the table is merged yet, and how
    its rows compare with what the build's inputs give now."""

    stage: str
    items: dict[str, int]
    rows: dict[str, int]
    merged: bool
    videos: int  # distinct videos with rows
    currency: Currency | None = None  # None for the index
    damaged: int = 0  # ledger chunks that could not be read (set aside, or found so now)


def build_status(build: Path | BuildDir) -> list[StageStatus]:
    """The index (videos per split) then every stage that has written anything."""
    build = BuildDir(build)
    if not build.videos.is_file():
        raise BuildError(f"{build} is not a build directory (no {build.videos.name}): run `ffx index` first")
    videos = store.read_table(build.videos, "`ffx index`").select(["key", "split"])
    by_split = dict(Counter(videos.column("split").to_pylist()))
    statuses = [StageStatus("index", by_split, by_split, True, videos.num_rows)]
    for name in stage_names():
        stage = make_stage(name)
        if not (build.table(name).is_file() or build.parts(name).exists()):
            continue
        merged = not build.parts(name).exists()
        ledger = store.Ledger(build.root, name, stage.schema, stage.sort_by)
        if merged:  # the stages' own check, remembered while nothing it depends on changes
            currency = stage_currency(build, name)
            rows = store.read_table(build.table(name), f"`{stage.command}`", ["key", "status"])
        else:
            rows = ledger.rows(set_aside=False)  # status changes nothing
            try:
                currency = compare(stage.plan(build, load_recipe(build)), made_from_per_key(rows))
            except BuildError as error:
                currency = Currency(upstream=str(error))
        # Counted by Arrow: at DFDC's size a table holds 3.6 M rows.
        pairs = rows.group_by(["key", "status"]).aggregate([([], "count_all")])
        pair_statuses = pairs.column("status").to_pylist()
        items = Counter(pair_statuses)  # a video counts once per status it has
        row_counts: Counter = Counter()
        for status, count in zip(pair_statuses, pairs.column("count_all").to_pylist()):
            row_counts[status] += count
        videos = pc.count_distinct(rows.column("key")).as_py()
        damaged = len(ledger.set_aside_chunks()) + len(ledger.unreadable)
        statuses.append(StageStatus(name, dict(items), dict(row_counts), merged, videos, currency, damaged))
    samples = next((status for status in statuses if status.stage == "samples"), None)
    if samples is not None and samples.currency.ok:  # the shards follow the samples
        statuses.insert(statuses.index(samples) + 1, _shards_status(build))
    return statuses


def _shards_status(build: BuildDir) -> StageStatus:
    """The shards as a pseudo-stage: laid out for the current samples and untouched since, or not."""
    from ffx.pipeline.stages.shard import shards_in_place

    index = shards_in_place(build)
    if index is None:
        files = len(list(build.shards.glob("*.tar")))
        state = "not laid out, or changed since written"
        return StageStatus("shards", {state: files}, {state: 0}, True, 0, Currency(stale=1))
    shards, samples = len(index["shards"]), sum(entry["samples"] for entry in index["shards"])
    return StageStatus(
        "shards", {"in place": shards}, {"in place": samples}, True, 0, Currency(current=shards)
    )


def video_root_note(build: Path | BuildDir) -> str:
    """A line when the dataset root `ffx index` recorded is not there (another machine, another
    mount path): what to pass to the commands that read the videos; "" when it is there."""
    build = BuildDir(build)
    try:
        root = build.video_root()
    except (OSError, ValueError, KeyError):
        return ""
    if root.is_dir():
        return ""
    return (
        f"the dataset root {root} (where `ffx index` saw the videos) is not there: on this machine, "
        "pass --root to `ffx build`, `ffx extract` and `ffx crop` (nothing is redone for the move)"
    )
