"""The build ledger: per-stage parquet tables, atomic writes, resume and partition fragments.

A stage writes the rows of finished items into small chunk files under
`BUILD/{stage}.parts/part-I-of-N/`, each written atomically, so a crash loses at most the
items in flight. Resume reads every chunk and redoes only items without rows. `merge` sorts
all rows into `BUILD/{stage}.parquet`: one run and any number of parts give the same table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from ffx.errors import BuildError
from ffx.pipeline.engine.atomic import atomic_path
from ffx.pipeline.engine.parts import Part


def write_table(path: Path, table: pa.Table) -> None:
    """Atomically write a parquet table (no timestamps inside, so equal tables give equal bytes)."""
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def read_table(path: Path, what: str) -> pa.Table:
    """Read a parquet table, or a BuildError naming the stage that makes it."""
    if not path.is_file():
        raise BuildError(f"{path} not found: run {what} first")
    return pq.read_table(path)


class Ledger:
    """One stage's table in a build directory: done items, chunk writes and the final merge."""

    def __init__(self, build: Path, stage: str, schema: pa.Schema, sort_by: Iterable[str]):
        self.build = Path(build)
        self.stage = stage
        self.schema = schema
        self.sort_by = list(sort_by)
        self.table_path = self.build / f"{stage}.parquet"
        self.parts_dir = self.build / f"{stage}.parts"

    def chunk_files(self) -> list[Path]:
        """Every finished chunk of every part (temp files are never matched)."""
        return sorted(self.parts_dir.glob("part-*/chunk-*.parquet"))

    def rows(self) -> pa.Table:
        """All rows so far: the merged table, then chunks in write order; for an item that
        appears more than once (a retry), only its latest rows count."""
        paths = [self.table_path] if self.table_path.is_file() else []
        pieces = [self._read(path) for path in [*paths, *self.chunk_files()]]
        return latest_rows_per_item(pieces, self.schema)

    def _read(self, path: Path) -> pa.Table:
        """A table file in this ledger's schema; columns it lacks (a build made by an older ffx)
        read as empty strings, so its items count as made from unknown inputs and are redone."""
        table = pq.read_table(path)
        for field in self.schema:
            if field.name not in table.column_names:
                table = table.append_column(field.name, pa.array([""] * table.num_rows, field.type))
        return table.select(self.schema.names).cast(self.schema)

    @contextmanager
    def writer(self, part: Part, flush_rows: int = 2000, flush_seconds: float = 5.0):
        """A ChunkWriter for `part`; whatever it holds is flushed when the block ends."""
        chunk_writer = ChunkWriter(self, part, flush_rows, flush_seconds)
        try:
            yield chunk_writer
        finally:
            chunk_writer.flush()

    def write_merged(self, table: pa.Table) -> None:
        """Write `table` sorted as `{stage}.parquet` (the chunks are removed by the caller)."""
        table = table.take(pa.compute.sort_indices(table, [(name, "ascending") for name in self.sort_by]))
        write_table(self.table_path, table)


def latest_rows_per_item(pieces: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate table pieces given in write order, keeping each key's rows from its last piece."""
    latest_piece: dict[str, int] = {}
    piece_keys = [piece.column("key").to_pylist() for piece in pieces]
    for order, keys in enumerate(piece_keys):
        latest_piece.update(dict.fromkeys(keys, order))
    kept = [
        piece.filter(pa.array([latest_piece[key] == order for key in keys], pa.bool_()))
        for order, (piece, keys) in enumerate(zip(pieces, piece_keys))
    ]
    return pa.concat_tables(kept) if kept else schema.empty_table()


class ChunkWriter:
    """Buffers finished items' rows and writes them as numbered, atomically renamed chunks."""

    def __init__(self, ledger: Ledger, part: Part, flush_rows: int, flush_seconds: float):
        self.ledger = ledger
        self.directory = ledger.parts_dir / part.name
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.directory.glob("chunk-*.parquet"))
        self.next_index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    def add_item(self, rows: list[dict]) -> None:
        """Record all rows of one finished item (they land in the same chunk)."""
        if not rows:
            raise BuildError(f"{self.ledger.stage}: an item must produce at least one row")
        self.pending.extend(rows)
        elapsed = time.monotonic() - self.last_flush
        if len(self.pending) >= self.flush_rows or elapsed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as the next chunk."""
        if self.pending:
            table = pa.Table.from_pylist(self.pending, schema=self.ledger.schema)
            write_table(self.directory / f"chunk-{self.next_index:06d}.parquet", table)
            self.next_index += 1
            self.pending = []
        self.last_flush = time.monotonic()


RUNS_LOG = "runs.jsonl"


def log_run(build: Path, stage: str, part: Part, seconds: float, items: int) -> None:
    """Append one stage run (which part, how long, how many items) to BUILD/runs.jsonl; a single
    short append, so runs of parallel parts do not interleave within a line."""
    line = json.dumps({"stage": stage, "part": part.name, "seconds": round(seconds, 3), "items": items})
    with open(Path(build) / RUNS_LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def stage_seconds(build: Path) -> dict[str, float]:
    """Seconds spent per stage over every logged run and part."""
    path = Path(build) / RUNS_LOG
    totals: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            run = json.loads(line)
            totals[run["stage"]] = round(totals.get(run["stage"], 0.0) + run["seconds"], 3)
    return totals
