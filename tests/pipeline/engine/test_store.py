"""The build ledger: partitions, atomic writes, chunked resume, retries and the deterministic merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.errors import BuildError, FfxError
from ffx.pipeline.engine.atomic import atomic_path, write_bytes, write_json
from ffx.pipeline.engine.parts import Part, parse_part
from ffx.pipeline.engine.store import ChunkWriter, Ledger, chunk_stamp, write_table

STAGE = "frames"
SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
    ]
)
SORT_BY = ("key", "frame_index")
# Twelve items with 1 to 3 frames each; every fifth one failed to decode.
ITEM_KEYS = [f"clip-{number:03d}" for number in range(12)]


def item_rows(key: str, status: str = "ok", frame_count: int | None = None) -> list[dict]:
    """The rows one finished item produces: one per frame (an error row has a single frame)."""
    frames = frame_count if frame_count is not None else 1 + int(key[-3:]) % 3
    error = "cannot decode" if status == "decode_error" else None
    return [{"key": key, "frame_index": index, "status": status, "error": error} for index in range(frames)]


def item_status(key: str) -> str:
    return "decode_error" if int(key[-3:]) % 5 == 0 else "ok"


def make_ledger(build: Path) -> Ledger:
    return Ledger(build, STAGE, SCHEMA, SORT_BY)


def done_keys(ledger: Ledger, retry_statuses=()) -> set[str]:
    """Items with rows, less those whose latest rows carry a status to retry."""
    rows = ledger.rows().to_pylist()
    return {row["key"] for row in rows} - {row["key"] for row in rows if row["status"] in set(retry_statuses)}


def merge(ledger: Ledger) -> pa.Table:
    """Fold every chunk into the sorted table, as the engine's merge does; the table written."""
    ledger.write_merged(ledger.rows())
    shutil.rmtree(ledger.parts_dir, ignore_errors=True)
    return pq.read_table(ledger.table_path)


def hidden_files(folder: Path) -> list[str]:
    """Temp files (atomic writes name them '.{final}.XXXX.tmp') anywhere under `folder`."""
    return sorted(path.name for path in folder.rglob(".*"))


# --- parse_part / Part ----------------------------------------------------------------------------------


def test_parse_part_from_text() -> None:
    assert parse_part("1/4", environ={}) == Part(1, 4)
    assert parse_part(" 0 / 1 ", environ={}) == Part(0, 1)
    assert parse_part("3/4", environ={}) == Part(3, 4)


@pytest.mark.parametrize("bad_text", ["4/4", "x", "1/0", "-1/2", "", "1/", "/2", "1.0/2", "5/4"])
def test_parse_part_rejects_bad_text(bad_text: str) -> None:
    with pytest.raises(FfxError, match="--part expects i/n"):
        parse_part(bad_text, environ={})


def test_parse_part_from_slurm_array_variables() -> None:
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_part(None, environ=slurm) == Part(2, 4)
    # Without TASK_MIN the task id is taken as 0-based.
    assert parse_part(None, environ={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == Part(3, 4)
    # An explicit part wins over the environment.
    assert parse_part("0/2", environ=slurm) == Part(0, 2)
    # A task id outside the array is an error, not a silent whole-job run.
    with pytest.raises(FfxError):
        parse_part(None, environ={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"})


@pytest.mark.parametrize(
    ("slurm", "named"),
    [
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='x' is not"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "four"}, "SLURM_ARRAY_TASK_COUNT='four'"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": ""}, "_MIN=''"),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT=0: an array"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID=4 is outside"),
        (
            {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"},
            "SLURM_ARRAY_TASK_ID=0 is outside the array of SLURM_ARRAY_TASK_COUNT=4 consecutive tasks "
            "from SLURM_ARRAY_TASK_MIN=1 (ids 1..4)",
        ),
    ],
)
def test_parse_part_names_the_slurm_variable_that_does_not_fit(slurm: dict, named: str) -> None:
    with pytest.raises(FfxError) as raised:
        parse_part(None, environ=slurm)
    message = str(raised.value)
    assert named in message and "--part i/n" in message and "\n" not in message
    assert parse_part("1/2", environ=slurm) == Part(1, 2)  # an explicit part does not read them


def test_parse_part_defaults_to_whole_job() -> None:
    assert parse_part(None, environ={}) == Part(0, 1)
    # Only one of the two Slurm variables is not enough to partition.
    assert parse_part(None, environ={"SLURM_ARRAY_TASK_ID": "2"}) == Part(0, 1)


@pytest.mark.parametrize("part_count", [1, 2, 3, 5, 12, 20])
def test_part_select_partitions_keys(part_count: int) -> None:
    shuffled_keys = ITEM_KEYS[7:] + ITEM_KEYS[:7]
    shares = [Part(index, part_count).select(shuffled_keys) for index in range(part_count)]
    all_selected = [key for share in shares for key in share]
    assert len(all_selected) == len(set(all_selected)) == len(ITEM_KEYS)  # disjoint
    assert set(all_selected) == set(ITEM_KEYS)  # union is everything
    # Round robin over sorted order: sizes differ by at most one and each share is sorted.
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert all(share == sorted(share) for share in shares)


def test_part_select_round_robin_values_and_name() -> None:
    assert Part(1, 3).select(["e", "a", "d", "c", "b", "f"]) == ["b", "e"]
    assert Part().select(["b", "a"]) == ["a", "b"]
    assert Part().name == "part-00000-of-00001"
    assert Part(3, 12).name == "part-00003-of-00012"


# --- atomic writes ---------------------------------------------------------------------------------------


def test_atomic_writers_leave_only_final_files(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "out"  # parents are created
    write_json(folder / "meta.json", {"b": 1, "a": ["é", 2]})
    write_bytes(folder / "blob.bin", b"\x00\x01payload")
    table = pa.table({"key": ["x", "y"], "value": [1, 2]})
    write_table(folder / "table.parquet", table)

    assert sorted(path.name for path in folder.iterdir()) == ["blob.bin", "meta.json", "table.parquet"]
    assert hidden_files(folder) == []
    assert json.loads((folder / "meta.json").read_text(encoding="utf-8")) == {"a": ["é", 2], "b": 1}
    assert (folder / "meta.json").read_text(encoding="utf-8").startswith('{\n  "a"')  # sorted keys
    assert (folder / "blob.bin").read_bytes() == b"\x00\x01payload"
    assert pq.read_table(folder / "table.parquet").equals(table)


def test_write_json_equal_values_give_equal_bytes(tmp_path: Path) -> None:
    write_json(tmp_path / "one.json", {"z": 1, "a": {"y": 2, "b": 3}})
    write_json(tmp_path / "two.json", {"a": {"b": 3, "y": 2}, "z": 1})
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_atomic_path_failure_creates_nothing(tmp_path: Path) -> None:
    final = tmp_path / "result.bin"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as temp:
        assert temp.parent == final.parent
        assert temp.name.startswith(".")
        temp.write_bytes(b"half written")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "result.json"
    write_json(final, {"version": 1})
    original_bytes = final.read_bytes()

    with pytest.raises(RuntimeError), atomic_path(final) as temp:
        temp.write_bytes(b"{ truncated")
        raise RuntimeError("crash mid write")
    with pytest.raises(TypeError):
        write_json(final, {"not json": {1, 2}})
    with pytest.raises((TypeError, AttributeError)):
        write_table(final, "not a table")  # type: ignore[arg-type]

    assert final.read_bytes() == original_bytes
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]


# --- Ledger ----------------------------------------------------------------------------------------------


def write_items(ledger: Ledger, part: Part, keys: list[str], flush_rows: int = 2000) -> None:
    with ledger.writer(part, flush_rows=flush_rows, flush_seconds=3600.0) as chunk_writer:
        for key in keys:
            chunk_writer.add_item(item_rows(key, item_status(key)))


def test_ledger_done_keys_and_retry_statuses(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    assert done_keys(ledger) == set()
    assert ledger.rows().num_rows == 0
    assert ledger.rows().schema.equals(SCHEMA)

    write_items(ledger, Part(), ITEM_KEYS[:6], flush_rows=4)
    assert done_keys(ledger) == set(ITEM_KEYS[:6])
    # clip-000 and clip-005 failed to decode: they are redone when that status is retried.
    assert done_keys(ledger, retry_statuses={"decode_error"}) == set(ITEM_KEYS[:6]) - {"clip-000", "clip-005"}
    assert done_keys(ledger, retry_statuses={"other_status"}) == set(ITEM_KEYS[:6])
    # Chunks are numbered per part and never half-written.
    chunk_names = [path.name for path in ledger.chunk_files()]
    stamps = [chunk_stamp(path) for path in ledger.chunk_files()]
    assert stamps == sorted(set(stamps)) and all(
        name == f"chunk-{stamp:020d}.parquet" for name, stamp in zip(chunk_names, stamps)
    )
    assert len(chunk_names) >= 2
    assert hidden_files(tmp_path) == []
    expected_rows = sum(len(item_rows(key, item_status(key))) for key in ITEM_KEYS[:6])
    assert ledger.rows().num_rows == expected_rows


def test_retried_item_keeps_only_latest_rows(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    write_items(ledger, Part(), ITEM_KEYS[:6])
    # A resumed run redoes clip-000 (it now decodes into 3 frames), in a later chunk of the same part.
    with ledger.writer(Part(), flush_seconds=3600.0) as chunk_writer:
        chunk_writer.add_item(item_rows("clip-000", "ok", frame_count=3))
    assert len(ledger.chunk_files()) == 2

    rows = ledger.rows().to_pylist()
    retried_rows = [row for row in rows if row["key"] == "clip-000"]
    assert retried_rows == item_rows("clip-000", "ok", frame_count=3)
    assert done_keys(ledger, retry_statuses={"decode_error"}) == set(ITEM_KEYS[:6]) - {"clip-005"}
    # Other items are untouched.
    assert [row for row in rows if row["key"] == "clip-005"] == item_rows("clip-005", "decode_error")

    # A retry after the merge also wins over the merged table.
    merge(ledger)
    with ledger.writer(Part(), flush_seconds=3600.0) as chunk_writer:
        chunk_writer.add_item(item_rows("clip-005", "ok", frame_count=2))
    rows = ledger.rows().to_pylist()
    assert [row for row in rows if row["key"] == "clip-005"] == item_rows("clip-005", "ok", frame_count=2)
    assert done_keys(ledger, retry_statuses={"decode_error"}) == set(ITEM_KEYS[:6])
    merged = merge(ledger).to_pylist()
    assert [row for row in merged if row["key"] == "clip-005"] == item_rows("clip-005", "ok", frame_count=2)


def test_merge_sorts_and_removes_parts(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    write_items(ledger, Part(), list(reversed(ITEM_KEYS)), flush_rows=5)
    assert ledger.parts_dir.is_dir()

    merged = merge(ledger)
    assert ledger.table_path == tmp_path / f"{STAGE}.parquet"
    assert ledger.table_path.is_file()
    assert not ledger.parts_dir.exists()
    assert hidden_files(tmp_path) == []

    on_disk = pq.read_table(ledger.table_path)
    assert on_disk.equals(merged)
    assert on_disk.schema.equals(SCHEMA)
    order = [(row["key"], row["frame_index"]) for row in on_disk.to_pylist()]
    assert order == sorted(order)
    assert order == [
        (key, index) for key in ITEM_KEYS for index in range(len(item_rows(key, item_status(key))))
    ]
    # After the merge the ledger still knows every item, from the merged table alone.
    assert done_keys(ledger) == set(ITEM_KEYS)
    # Merging again is a no-op on content.
    assert merge(ledger).equals(merged)


def test_two_part_run_equals_single_run(tmp_path: Path) -> None:
    single = make_ledger(tmp_path / "single")
    write_items(single, Part(), ITEM_KEYS, flush_rows=7)
    single_table = merge(single)

    split = make_ledger(tmp_path / "split")
    first_part, second_part = Part(0, 2), Part(1, 2)
    # The second part finishes first, and each part handles its items in its own (reversed/odd) order.
    write_items(split, second_part, list(reversed(second_part.select(ITEM_KEYS))), flush_rows=2)
    first_share = first_part.select(ITEM_KEYS)
    write_items(split, first_part, first_share[3:] + first_share[:3], flush_rows=3)
    assert {path.parent.name for path in split.chunk_files()} == {first_part.name, second_part.name}
    assert done_keys(split) == set(ITEM_KEYS)
    split_table = merge(split)

    assert split_table.equals(single_table)
    assert pq.read_table(split.table_path).equals(pq.read_table(single.table_path))
    assert split.table_path.read_bytes() == single.table_path.read_bytes()


def test_crash_keeps_exactly_the_flushed_items(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    flushed_keys, lost_keys = ITEM_KEYS[:3], ITEM_KEYS[3:6]
    # A process killed mid-run: the first items are flushed one chunk each, the rest sit in the buffer
    # when the process dies (no `finally`, no flush).
    chunk_writer = ChunkWriter(ledger, Part(), flush_rows=1, flush_seconds=3600.0)
    for key in flushed_keys:
        chunk_writer.add_item(item_rows(key))
    chunk_writer.flush_rows = 1000
    for key in lost_keys:
        chunk_writer.add_item(item_rows(key))
    assert len(chunk_writer.pending) == sum(len(item_rows(key)) for key in lost_keys)
    del chunk_writer
    # An interrupted atomic write leaves a temp file; resume must ignore it.
    stray_temp = ledger.parts_dir / Part().name / ".chunk-000003.parquet.abcd.tmp"
    stray_temp.write_bytes(b"partial")

    resumed = make_ledger(tmp_path)
    assert done_keys(resumed) == set(flushed_keys)
    assert len(resumed.chunk_files()) == len(flushed_keys)

    # The resumed run continues the chunk numbering and completes the job.
    with resumed.writer(Part(), flush_seconds=3600.0) as chunk_writer:
        assert chunk_writer.next_stamp() > max(chunk_stamp(path) for path in resumed.chunk_files())
        for key in sorted(set(ITEM_KEYS) - done_keys(resumed)):
            chunk_writer.add_item(item_rows(key))
    assert done_keys(resumed) == set(ITEM_KEYS)


def test_exception_in_writer_block_flushes_finished_items(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    with (
        pytest.raises(RuntimeError, match="decoder crashed"),
        ledger.writer(Part(), flush_rows=1, flush_seconds=3600.0) as chunk_writer,
    ):
        chunk_writer.add_item(item_rows("clip-001"))
        chunk_writer.add_item(item_rows("clip-002"))
        chunk_writer.flush_rows = 1000
        chunk_writer.add_item(item_rows("clip-003"))
        raise RuntimeError("decoder crashed")
    # Items whose rows were handed to add_item are finished: the block's exit still writes them.
    assert done_keys(ledger) == {"clip-001", "clip-002", "clip-003"}
    assert hidden_files(tmp_path) == []


def test_add_item_without_rows_raises(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    with ledger.writer(Part(), flush_seconds=3600.0) as chunk_writer:
        with pytest.raises(BuildError, match=f"{STAGE}: an item must produce at least one row"):
            chunk_writer.add_item([])
        assert chunk_writer.pending == []
    assert ledger.chunk_files() == []


def test_rows_written_last_win_whatever_the_part_folders_sort_as(tmp_path: Path) -> None:
    """A --part 0/2 run, then a whole run (part-00000-of-00001 sorts before part-00000-of-00002):
    the whole run's rows are the latest."""
    ledger = make_ledger(tmp_path)
    write_items(ledger, Part(0, 2), ["clip-000"])
    with ledger.writer(Part(), flush_seconds=3600.0) as chunk_writer:
        chunk_writer.add_item(item_rows("clip-000", "ok", frame_count=5))
    assert sorted(path.parent.name for path in ledger.chunk_files()) == [Part().name, Part(0, 2).name]
    assert ledger.rows().to_pylist() == item_rows("clip-000", "ok", frame_count=5)
    # and a later part run wins over the whole run again
    with ledger.writer(Part(0, 2), flush_seconds=3600.0) as chunk_writer:
        chunk_writer.add_item(item_rows("clip-000", "ok", frame_count=2))
    assert ledger.rows().to_pylist() == item_rows("clip-000", "ok", frame_count=2)
