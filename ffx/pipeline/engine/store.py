"""The build ledger: per-stage parquet tables, atomic writes, resume and partition fragments.

A stage writes the rows of finished items into small chunk files under
`BUILD/{stage}.parts/part-I-of-N/`, each written atomically, so a crash loses at most the
items in flight. Resume reads every chunk and redoes only items without rows. `merge` sorts
all rows into `BUILD/{stage}.parquet`: one run and any number of parts give the same table.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from ffx.errors import BuildError
from ffx.pipeline.engine.atomic import write_bytes
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.machine import machine
from ffx.pipeline.engine.memo import file_states
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import command_of


def write_table(path: Path, table: pa.Table) -> None:
    """Atomically write a parquet table (no timestamps inside, so equal tables give equal bytes,
    and an unchanged table is not written again)."""
    write_bytes(path, table_bytes(table))


def table_bytes(table: pa.Table) -> bytes:
    """A table as a parquet file's bytes, as `write_table` writes it."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def read_table(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet table (only `columns`, where given: counting statuses over 3.6 M rows needs
    two), or a BuildError naming the command that makes it."""
    if not path.is_file():
        raise BuildError(f"{path} not found: run {what} first")
    return _read_parquet(path, what, columns)


# path -> (its file state when read, the table), the tables read last: a command reads each table
# several times (the plans of the stages after it, its own rerun, status), each read of a 3.6 M-row
# table a second; a stage needs at most three at once (the index, its upstream and its own), and
# holding every table of a DFDC-sized build at once would take gigabytes.
_read_tables: OrderedDict[str, tuple[list, pa.Table]] = OrderedDict()
TABLES_KEPT = 3


def _read_parquet(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """A merged table (or some of its columns), or a BuildError when it is damaged. A whole table
    read before and holding the same bytes since is not read again."""
    state = file_states([path])
    known = _read_tables.get(str(path))
    if known is not None and known[0] == state:
        _read_tables.move_to_end(str(path))
        return known[1] if columns is None else known[1].select(columns)
    table = _parse_parquet(path, what, columns)
    if columns is None:
        _read_tables[str(path)] = (state, table)
        while len(_read_tables) > TABLES_KEPT:
            _read_tables.popitem(last=False)
    return table


def _parse_parquet(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """A parquet file, or a BuildError when it is damaged (truncated by a full disk, say)."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise BuildError(
            f"{path} is not a readable table ({error}); delete it and run {what} again to rebuild it"
        ) from None


class Ledger:
    """One stage's table in a build directory: done items, chunk writes and the final merge."""

    def __init__(self, build: Path, stage: str, schema: pa.Schema, sort_by: Iterable[str]):
        self.build = Path(build)
        self.stage = stage
        self.schema = schema
        self.sort_by = list(sort_by)
        self.table_path = BuildDir(build).table(stage)
        self.parts_dir = BuildDir(build).parts(stage)
        self.set_aside_dir = BuildDir(build).set_aside(stage)
        self.unreadable: list[Path] = []  # chunks a read without set_aside found damaged

    def mark_done(self, part: Part, plan: str) -> None:
        """Leave `{part}.{plan}.done` in the parts folder: every item of `part` has current rows
        for the plan whose digest is `plan` (an earlier marker of the part is replaced)."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        for old in self.parts_dir.glob(f"{part.name}.*.done"):
            old.unlink(missing_ok=True)
        write_bytes(self.parts_dir / f"{part.name}.{plan}.done", b"")

    def all_done(self, count: int, plan: str) -> bool:
        """Whether every part of `count` left its marker for `plan`: one listing, no rows read."""
        try:
            names = set(os.listdir(self.parts_dir))
        except FileNotFoundError:
            return False
        return all(f"{Part(index, count).name}.{plan}.done" in names for index in range(count))

    def chunk_files(self) -> list[Path]:
        """Every finished chunk of every part, in write order (temp files are never matched)."""
        return sorted(self.parts_dir.glob("part-*/chunk-*.parquet"), key=chunk_stamp)

    def rows(self, part: Part | None = None, set_aside: bool = True) -> pa.Table:
        """All rows so far: the merged table, then chunks in write order; for an item that
        appears more than once (a retry), only its latest rows count.

        With `part`, only the chunks that can hold its items: its own, and those of runs with
        another part count; the other parts of its count hold other items. (An item a part
        cannot see there, moved to it because videos were added mid-build, is done again: its
        newer rows win.) So a part reads no other part's rows.

        A chunk that cannot be read is set aside (`set_aside`, see `_set_aside`) or, for a reader
        that changes nothing (`ffx status`), left out and counted in `self.unreadable`."""
        paths = [self.table_path] if self.table_path.is_file() else []
        chunks = self.chunk_files()
        if part is not None:
            suffix = f"-of-{part.count:05d}"
            chunks = [
                path
                for path in chunks
                if path.parent.name == part.name or not path.parent.name.endswith(suffix)
            ]
        pieces = [self._read(path) for path in paths]
        for path in chunks:
            try:
                pieces.append(self._read(path))
            except BuildError:
                if not path.exists():  # set aside by another run, or merged, while listed
                    continue
                if not _damaged(path):
                    raise  # a read error (EIO, ESTALE, a permission): the file may be sound
                if set_aside:
                    self._set_aside(path)
                else:
                    self.unreadable.append(path)
        return latest_rows_per_item(pieces, self.schema)

    def _set_aside(self, chunk: Path) -> None:
        """Move a damaged chunk (truncated, overwritten) to BUILD/damaged/{stage}/, so its items
        count as not done and are made again. Its part's marker goes, and the markers of every
        other part count (whose parts may hold its items), so no part merges before they are made.
        `ffx status` lists what was set aside. Of runs that find it at once, one moves it."""
        self.set_aside_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(chunk, self.set_aside_dir / f"{chunk.parent.name}.{chunk.name}")
        except FileNotFoundError:
            return
        folder = chunk.parent.name
        count = folder.rsplit("-of-", 1)[1]
        for marker in self.parts_dir.glob("*.done"):
            part = marker.name.split(".", 1)[0]
            if part == folder or not part.endswith(f"-of-{count}"):
                marker.unlink(missing_ok=True)

    def set_aside_chunks(self) -> list[Path]:
        """The damaged chunks set aside so far."""
        return sorted(self.set_aside_dir.glob("*.parquet")) if self.set_aside_dir.is_dir() else []

    def _read(self, path: Path) -> pa.Table:
        """A table file in this ledger's schema; columns it lacks (a build made by an older ffx)
        read as empty strings, so its items count as made from unknown inputs and are redone."""
        what = f"`{command_of(self.stage, 'ffx build')}`"
        # The merged table through the cache; a chunk is read once, neither hashed nor kept.
        table = _read_parquet(path, what) if path == self.table_path else _parse_parquet(path, what)
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


def _damaged(path: Path) -> bool:
    """Whether a file's bytes are not a parquet table (truncated, overwritten, a flipped byte), as
    opposed to a file that could not be read just now: the bytes are read by Python (a real read
    error keeps its errno, EIO, ESTALE: not damage), then parsed in memory, where any failure is
    the bytes' own."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    try:
        pq.read_table(pa.BufferReader(data))
    except Exception:  # pyarrow says "ZSTD decompression failed" and the like as OSError too
        return True
    return False


def latest_rows_per_item(pieces: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate table pieces given in write order, keeping each key's rows from its last piece."""
    if len(pieces) == 1:
        return pieces[0]
    latest_piece: dict[str, int] = {}
    piece_keys = [piece.column("key").to_pylist() for piece in pieces]
    for order, keys in enumerate(piece_keys):
        latest_piece.update(dict.fromkeys(keys, order))
    kept = [
        piece.filter(pa.array([latest_piece[key] == order for key in keys], pa.bool_()))
        for order, (piece, keys) in enumerate(zip(pieces, piece_keys))
    ]
    return pa.concat_tables(kept) if kept else schema.empty_table()


def chunk_stamp(path: Path) -> int:
    """The write stamp in a chunk's name: later chunks of any part have larger ones."""
    return int(path.stem.split("-")[1])


class ChunkWriter:
    """Buffers finished items' rows and writes them as atomically renamed chunks, each named by a
    stamp larger than every chunk's already there in any part: when the part count changes, the
    rows written last still win (ledger.rows), whatever the folder names sort as."""

    def __init__(self, ledger: Ledger, part: Part, flush_rows: int, flush_seconds: float):
        self.ledger = ledger
        self.directory = ledger.parts_dir / part.name
        self.directory.mkdir(parents=True, exist_ok=True)
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

    def next_stamp(self) -> int:
        """Now in nanoseconds, or one past the newest chunk of any part (a clock behind)."""
        newest = max((chunk_stamp(path) for path in self.ledger.chunk_files()), default=0)
        return max(time.time_ns(), newest + 1)

    def flush(self) -> None:
        """Write the pending rows as the next chunk."""
        if self.pending:
            table = pa.Table.from_pylist(self.pending, schema=self.ledger.schema)
            write_table(self.directory / f"chunk-{self.next_stamp():020d}.parquet", table)
            self.pending = []
        self.last_flush = time.monotonic()


RUNS_LOG = "runs.jsonl"


def log_run(build: Path, stage: str, part: Part, seconds: float, items: int, device: str = "") -> None:
    """Append one stage run (which part, how long, how many items, on which machine and device) to
    BUILD/runs.jsonl; a single short append, so runs of parallel parts do not interleave within a
    line."""
    run = {"stage": stage, "part": part.name, "seconds": round(seconds, 3), "items": items}
    line = json.dumps(run | machine(device))
    with open(Path(build) / RUNS_LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def _runs(build: Path) -> list[dict]:
    """The logged runs; a line torn by a full disk (a short append) is left out."""
    path = Path(build) / RUNS_LOG
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and {"stage", "seconds"} <= set(run):
            runs.append(run)
    return runs


def run_machines(build: Path) -> dict[str, list[dict]]:
    """Per stage, the machines its logged runs ran on (host, CPU kernels, device), each once."""
    machines: dict[str, list[dict]] = {}
    for run in _runs(build):
        # Runs logged before machines were recorded name none.
        facts = {name: run[name] for name in ("host", "cpu_kernels", "device") if name in run}
        if facts and facts not in machines.setdefault(run["stage"], []):
            machines[run["stage"]].append(facts)
    return machines


def stage_seconds(build: Path) -> dict[str, float]:
    """Seconds spent per stage over every logged run and part."""
    totals: dict[str, float] = {}
    for run in _runs(build):
        totals[run["stage"]] = round(totals.get(run["stage"], 0.0) + run["seconds"], 3)
    return totals
