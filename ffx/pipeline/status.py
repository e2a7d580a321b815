"""`ffx status`: items per stage and status, read from the build directory's tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ffx.errors import BuildError
from ffx.pipeline.index import VIDEOS_TABLE
from ffx.pipeline.store import latest_rows_per_item

# Stage tables in pipeline order; each has `key` (the item) and `status` columns.
STAGE_TABLES = ("frames", "faces", "samples")


@dataclass
class StageStatus:
    """Counts of one stage: videos with rows of each status (a video with ok and no_face frames
    counts under both), rows (frames, faces) per status, and whether the table is merged yet."""

    stage: str
    items: dict[str, int]
    rows: dict[str, int]
    merged: bool
    videos: int  # distinct videos with rows


def _stage_rows(build: Path, stage: str) -> pa.Table | None:
    """Key and status of every current row: merged table then chunks, latest rows per item."""
    chunks = sorted((build / f"{stage}.parts").glob("part-*/chunk-*.parquet"))
    merged = build / f"{stage}.parquet"
    pieces = [pq.read_table(path, columns=["key", "status"]) for path in chunks]
    if merged.is_file():
        pieces.insert(0, pq.read_table(merged, columns=["key", "status"]))
    return latest_rows_per_item(pieces, pieces[0].schema) if pieces else None


def build_status(build: Path) -> list[StageStatus]:
    """The index (videos per split) then every stage that has written anything."""
    build = Path(build)
    videos_path = build / VIDEOS_TABLE
    if not videos_path.is_file():
        raise BuildError(f"{build} is not a build directory (no {VIDEOS_TABLE}): run `ffx index` first")
    videos = pq.read_table(videos_path, columns=["key", "split"])
    by_split = dict(Counter(videos.column("split").to_pylist()))
    statuses = [StageStatus("index", by_split, by_split, True, videos.num_rows)]
    for stage in STAGE_TABLES:
        rows = _stage_rows(build, stage)
        if rows is None:
            continue
        pairs = list(zip(rows.column("key").to_pylist(), rows.column("status").to_pylist()))
        items = Counter(status for _, status in set(pairs))  # a video counts once per status it has
        row_counts = Counter(status for _, status in pairs)
        merged = not (build / f"{stage}.parts").exists()
        videos_seen = len({key for key, _ in pairs})
        statuses.append(StageStatus(stage, dict(items), dict(row_counts), merged, videos_seen))
    return statuses
