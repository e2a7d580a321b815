"""Deterministic tar records: fixed mtime, owner, mode and header format, so that equal members
in equal order give equal bytes, whatever machine, user or clock wrote them."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
MTIME = 0  # 1970-01-01: the members' time says nothing about the data
MODE = 0o444


def tar_record(name: str, data: bytes) -> bytes:
    """One regular-file member: header (GNU format, for names over 100 bytes), data, padding."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    header = info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")
    return header + data + bytes(-len(data) % BLOCK)


def tar_records(members: Iterable[tuple[str, bytes]]) -> bytes:
    """Consecutive records of (name, data) members, without the end-of-archive blocks."""
    return b"".join(tar_record(name, data) for name, data in members)
