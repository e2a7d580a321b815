"""List files: MCX-API `path label`, LIB `label,path,nframes` and CSV `path,label[,split,group]`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import Entry, Scan, list_file_under, read_list_text, relative_inside
from ffx.pipeline.recipe.manifest import DatalistLayout
from ffx.pipeline.recipe.schema import SPLITS

LABEL_NAMES = {"real": 0, "fake": 1}
CSV_COLUMNS = ("path", "label", "split", "group")


def _label(value: str, origin: str, line: str) -> tuple[int | None, str | None]:
    """An integer class index, or a label name to look up in the map."""
    value = value.strip()
    if not value:
        raise InputError(f"{origin}: empty label in {line!r}")
    if value.lstrip("-").isdigit():
        return int(value), None
    return None, value


def _mcx_api_rows(text: str, list_path: Path):
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        origin = f"{list_path}:{line_number}"
        fields = line.strip().rsplit(None, 1)  # paths may hold spaces; the label is last
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise InputError(f"{origin}: expected 'path label' (integer label), got {line!r}")
        yield origin, line, fields[0], fields[1], None, None


def _lib_rows(text: str, list_path: Path):
    for line_number, fields in enumerate(csv.reader(io.StringIO(text)), 1):
        if not fields or not "".join(fields).strip():
            continue
        origin = f"{list_path}:{line_number}"
        line = ",".join(fields)
        if len(fields) != 3 or not fields[0].strip().isdigit() or not fields[2].strip().isdigit():
            raise InputError(f"{origin}: expected 'label,path,nframes' (integers), got {line!r}")
        yield origin, line, fields[1], fields[0], None, None


def _csv_rows(text: str, list_path: Path):
    rows = list(csv.reader(io.StringIO(text)))
    header = [cell.strip().lower() for cell in rows[0]][:2] if rows else []
    start = 1 if header == ["path", "label"] else 0  # `Path, Label` is a header too
    for line_number, fields in enumerate(rows[start:], start + 1):
        if not fields or not "".join(fields).strip():
            continue
        origin = f"{list_path}:{line_number}"
        line = ",".join(fields)
        if not 2 <= len(fields) <= 4:
            raise InputError(f"{origin}: expected 'path,label[,split,group]', got {line!r}")
        fields += [""] * (4 - len(fields))
        split = fields[2].strip() or None
        if split is not None and split not in SPLITS:
            raise InputError(f"{origin}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        yield origin, line, fields[0], fields[1], split, fields[3].strip() or None


READERS = {"mcx-api-datalist": _mcx_api_rows, "lib-datalist": _lib_rows, "csv": _csv_rows}


def scan(root: Path, layout: DatalistLayout, splits_dir: Path | None) -> Scan:
    """Entries from the list file (under the root: relative to it, or absolute inside it); one
    group per video unless the CSV names groups."""
    if not root.is_dir():
        raise InputError(f"dataset root not found: {root}")
    list_path = list_file_under(root, layout.list_file, "layout.list_file")
    if not list_path.is_file():
        raise InputError(f"datalist not found: {list_path}")
    text = read_list_text(list_path, encoding="utf-8-sig")
    entries = []
    seen: dict[str, str] = {}
    for origin, line, listed, label_text, split, group in READERS[layout.kind](text, list_path):
        path = relative_inside(root, listed.strip(), origin)
        if path in seen:
            raise InputError(f"{origin}: duplicate entry {path} (first at {seen[path]})")
        seen[path] = origin
        label, label_name = _label(label_text, origin, line)
        entries.append(
            Entry(
                path,
                "listed",
                label_name,
                label,
                split=split,
                identities=(f"group:{group}" if group else f"video:{path}",),
                origin=origin,
            )
        )
    return Scan(layout.kind, entries, dict(LABEL_NAMES))
