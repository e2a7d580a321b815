"""The build ledger: per-stage parquet tables, atomic writes, resume and partition fragments.

A stage writes the rows of finished items into small chunk files under
`BUILD/{stage}.parts/part-I-of-N/`, each written atomically, so a crash loses at most the
items in flight. Resume reads every chunk and redoes only items without rows. `merge` sorts
all rows into `BUILD/{stage}.parquet`: one run and any number of parts give the same table.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from ffx.errors import BuildError
from ffx.pipeline.distribute import Part


@contextmanager
def atomic_path(final: Path):
    """Yield a temp path beside `final`; on success fsync it and rename it over `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically write bytes."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_json(path: Path, value) -> None:
    """Atomically write JSON (sorted keys, so equal values give equal bytes)."""
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def write_table(path: Path, table: pa.Table) -> None:
    """Atomically write a parquet table (no timestamps inside, so equal tables give equal bytes)."""
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def record_settings(build: Path, stage: str, settings: dict) -> None:
    """Save a stage's output-shaping settings in `BUILD/{stage}.json`; refuse different ones later,
    so one build never mixes outputs made two ways."""
    path = build / f"{stage}.json"
    if not path.is_file():
        write_json(path, settings)
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded != settings:
        changed = ", ".join(
            f"{name} {recorded.get(name)!r} -> {value!r}"
            for name, value in settings.items()
            if recorded.get(name) != value
        )
        raise BuildError(
            f"{build} holds {stage} made with other settings ({changed}); use a new --build "
            f"directory, or delete {stage}/, {stage}.parquet, {stage}.parts/ and {stage}.json there"
        )


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
        pieces = [pq.read_table(self.table_path, schema=self.schema)] if self.table_path.is_file() else []
        pieces += [pq.read_table(path, schema=self.schema) for path in self.chunk_files()]
        return latest_rows_per_item(pieces, self.schema)

    def done_keys(self, retry_statuses: Iterable[str] = ()) -> set[str]:
        """Item keys that already have rows, less those whose rows carry a status to retry."""
        table = self.rows()
        keys = table.column("key").to_pylist()
        statuses = table.column("status").to_pylist()
        retry = set(retry_statuses)
        redo = {key for key, status in zip(keys, statuses) if status in retry}
        return set(keys) - redo

    @contextmanager
    def writer(self, part: Part, flush_rows: int = 2000, flush_seconds: float = 5.0):
        """A ChunkWriter for `part`; whatever it holds is flushed when the block ends."""
        chunk_writer = ChunkWriter(self, part, flush_rows, flush_seconds)
        try:
            yield chunk_writer
        finally:
            chunk_writer.flush()

    def merge(self) -> pa.Table:
        """Sort every row into `{stage}.parquet`, then drop the chunks folded into it."""
        table = self.rows()
        table = table.take(pa.compute.sort_indices(table, [(name, "ascending") for name in self.sort_by]))
        write_table(self.table_path, table)
        if self.parts_dir.exists():
            shutil.rmtree(self.parts_dir)
        return table

    def merge_when_complete(self, keys: Iterable[str]) -> bool:
        """Merge once every key has rows, whichever part gets there last (a lock keeps two parts
        from merging at once); True when the merged table is complete."""
        keys = set(keys)
        self.build.mkdir(parents=True, exist_ok=True)
        with open(self.build / f".{self.stage}.merge.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another part is merging right now
            if not keys <= self.done_keys():
                return False
            if self.parts_dir.exists():
                self.merge()
            return True


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
