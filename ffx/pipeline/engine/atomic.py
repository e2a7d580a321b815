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


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by changing it, which is not safe next to threads.
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(final: Path):
    """Yield a temp path beside `final`; on success fsync it, give it the mode a plain `open` would
    (mkstemp makes it 0600, which would hide a dataset from the other users of a shared folder)
    and rename it over `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        try:
            yield temp
        except OSError as error:
            raise named(error, final) from error
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temp, FILE_MODE)
        os.replace(temp, final)
        _sha256_of.pop(os.path.abspath(final), None)
    finally:
        temp.unlink(missing_ok=True)


def named(error: OSError, path: Path) -> OSError:
    """The error, naming `path` when the system did not name a file (a failed write())."""
    return error if error.filename else type(error)(error.errno, error.strerror, str(path))


def write_file(path: Path, data: bytes) -> None:
    """Write a file that a hidden temp folder publishes later; a failure names the file."""
    try:
        Path(path).write_bytes(data)
    except OSError as error:
        raise named(error, path) from error


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# absolute path -> (its stat when hashed, its sha256): each file is hashed once while this process
# sees it untouched; atomic_path forgets a file it replaces (a coarse clock may not show it).
_sha256_of: dict[str, tuple[tuple[int, ...], str]] = {}


def content_state(path: Path) -> list | None:
    """[size, sha256] of a file, None when it is not there: what it holds, whatever its inode or
    mtime (a copy holds the same; a file rewritten within one tick of a coarse clock does not)."""
    try:
        facts = os.stat(path)
    except OSError:
        return None
    seen = (facts.st_ino, facts.st_mtime_ns, facts.st_ctime_ns, facts.st_size)
    where = os.path.abspath(path)
    known = _sha256_of.get(where)
    if known is None or known[0] != seen:
        try:
            known = _sha256_of[where] = (seen, file_sha256(path))
        except OSError:
            return None
    return [facts.st_size, known[1]]


def holds(path: Path, data: bytes) -> bool:
    """Whether the file `path` holds exactly these bytes."""
    try:
        return Path(path).stat().st_size == len(data) and Path(path).read_bytes() == data
    except OSError:
        return False


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically write bytes; a file that already holds exactly these bytes is left alone, so a
    run that changes nothing writes nothing (and works on a read-only build)."""
    if holds(path, data):
        return
    with atomic_path(Path(path)) as temp:
        temp.write_bytes(data)


def json_bytes(value) -> bytes:
    """JSON as ffx writes it: sorted keys, so equal values give equal bytes."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_json(path: Path, value) -> None:
    """Atomically write JSON (sorted keys, so equal values give equal bytes)."""
    write_bytes(path, json_bytes(value))
