"""Atomic file writes and file hashes: a file appears whole under its final name, or not at all.

No pyarrow here: worker processes import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
