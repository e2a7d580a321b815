"""A stage table grouped by item key, rows made into dicts only for the keys asked for.

At DFDC's size a stage table holds 3.6 M rows (120 000 videos, 30 frames each): as Python dicts
that is gigabytes and tens of seconds, while a plan or a rerun needs most rows only as columns
(keys, digests, statuses, paths). A `RowsByKey` keeps the Arrow table, sorted by key, and the
row range of each key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

# Strings that canonical JSON (json.dumps, ASCII) writes as they are between quotes.
_PLAIN_JSON = r"^[ !#-\[\]-~]*$"


class RowsByKey(Mapping[str, list[dict]]):
    """A table's rows per key, in table order within a key (a stable sort by key)."""

    def __init__(self, table: pa.Table) -> None:
        keys = table.column("key")
        if table.num_rows > 1 and not pc.all(pc.greater_equal(keys[1:], keys[:-1])).as_py():
            table = table.take(pc.sort_indices(table, [("key", "ascending")]))  # stable
            keys = table.column("key")
        self.table = table
        self.starts: list[int] = []
        if table.num_rows:
            changes = pc.not_equal(keys[1:], keys[:-1])
            self.starts = [0, *(pc.add(pc.indices_nonzero(changes), 1).to_pylist())]
        self.keys: list[str] = keys.take(pa.array(self.starts, pa.int64())).to_pylist()
        self._range = {
            key: (start, stop)
            for key, start, stop in zip(self.keys, self.starts, [*self.starts[1:], table.num_rows])
        }

    def __getitem__(self, key: str) -> list[dict]:
        start, stop = self._range[key]
        return self.table.slice(start, stop - start).to_pylist()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._range

    def groups(self, batch_rows: int = 65_536) -> Iterator[tuple[str, list[dict]]]:
        """Every key with its rows, in key order, made into dicts a batch at a time."""
        key, rows = None, []
        for batch in self.table.to_batches(batch_rows):
            for row in batch.to_pylist():
                if row["key"] != key:
                    if rows:
                        yield key, rows
                    key, rows = row["key"], []
                rows.append(row)
        if rows:
            yield key, rows

    def first(self, column: str) -> dict[str, object]:
        """Each key's value of `column` in its first row."""
        values = self.table.column(column).take(pa.array(self.starts, pa.int64())).to_pylist()
        return dict(zip(self.keys, values))

    def keys_where(self, mask: pa.ChunkedArray | pa.Array) -> set[str]:
        """The keys with at least one row where `mask` is true."""
        return set(self.table.column("key").filter(mask).to_pylist())

    def joined(self, texts: list[str], separator: str = ",") -> dict[str, str]:
        """Each key's `texts` (one per row, in row order) joined into one string."""
        return {key: separator.join(texts[start:stop]) for key, (start, stop) in self._range.items()}


def rows_by_key(table: pa.Table) -> RowsByKey:
    """A table's rows grouped by item key (dicts made only for the keys read)."""
    return RowsByKey(table)


def json_texts(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Each value as canonical JSON text (what `json.dumps` writes), for integer and string
    columns, computed by Arrow; a string that needs escaping goes through `json.dumps`."""
    if pa.types.is_integer(values.type):
        return pc.fill_null(pc.cast(values, pa.string()), "null")
    if not pa.types.is_string(values.type):
        raise TypeError(f"json_texts takes integers or strings, not {values.type}")
    if pc.all(pc.match_substring_regex(pc.fill_null(values, ""), _PLAIN_JSON)).as_py() in (True, None):
        quoted = pc.binary_join_element_wise('"', values, '"', "")
        return pc.fill_null(quoted, "null")
    return pa.array([json.dumps(value) for value in values.to_pylist()], pa.string())
