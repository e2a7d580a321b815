"""`ffx status`: items per stage and status, read from the build directory's tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ffx.errors import BuildError
from ffx.pipeline.index import VIDEOS_TABLE

# Stage tables in pipeline order; each has `key` (the item) and `status` columns.
STAGE_TABLES = ("frames", "faces")


@dataclass
class StageStatus:
    """Counts of one stage: items (videos) and rows (frames, faces) per status; merged or not."""

    stage: str
    items: dict[str, int]
    rows: dict[str, int]
    merged: bool


def _stage_rows(build: Path, stage: str) -> pa.Table | None:
    chunks = sorted((build / f"{stage}.parts").glob("part-*/chunk-*.parquet"))
    merged = build / f"{stage}.parquet"
    pieces = [pq.read_table(path, columns=["key", "status"]) for path in chunks]
    if merged.is_file():
        pieces.insert(0, pq.read_table(merged, columns=["key", "status"]))
    return pa.concat_tables(pieces) if pieces else None


def build_status(build: Path) -> list[StageStatus]:
    """The index (videos per split) then every stage that has written anything."""
    build = Path(build)
    videos_path = build / VIDEOS_TABLE
    if not videos_path.is_file():
        raise BuildError(f"{build} is not a build directory (no {VIDEOS_TABLE}): run `ffx index` first")
    videos = pq.read_table(videos_path, columns=["key", "split"])
    by_split = dict(Counter(videos.column("split").to_pylist()))
    statuses = [StageStatus("index", by_split, by_split, True)]
    for stage in STAGE_TABLES:
        rows = _stage_rows(build, stage)
        if rows is None:
            continue
        pairs = list(zip(rows.column("key").to_pylist(), rows.column("status").to_pylist()))
        # An item retried after a failure has rows from both runs until the merge; the latest counts.
        latest = dict(pairs)
        items = Counter(latest.values())
        row_counts = Counter(status for key, status in pairs if latest[key] == status)
        merged = not (build / f"{stage}.parts").exists()
        statuses.append(StageStatus(stage, dict(items), dict(row_counts), merged))
    return statuses
