"""One run of a stage per part at a time: an O_EXCL lock file in the build directory.

O_EXCL creation is atomic on local disks and on NFS (v3 and later) and Lustre, where flock may be
missing or local to one node; the file names its holder so a second run can say who it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ffx.errors import BuildError
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import command_of


@contextmanager
def hold_lock(build: BuildDir, stage: str, part: Part):
    """Hold `stage`'s lock for `part`. The lock file is written whole beside its final name and
    linked into place (link, like O_EXCL, fails when the name exists, on NFS and Lustre too), so
    it always names its holder: host, pid, part and start time. A second run of the stage exits
    naming the holder, whether it asks for the same part or for another part count (two part
    counts share videos); parts of one count run at once. A lock whose process is gone on this
    host is taken over."""
    path = build.lock(stage, part.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "part": part.name, "started": time.time()}
    draft = path.with_name(f".{path.name}.{holder['host']}.{holder['pid']}.tmp")
    draft.write_text(json.dumps(holder), encoding="utf-8")
    try:
        for _attempt in range(3):
            try:
                os.link(draft, path)
            except FileExistsError:
                _refuse_or_take_over(build, stage, path)
                continue
            break
        else:
            raise BuildError(f"could not take the lock {path}; delete it if no ffx runs on {build}")
    finally:
        draft.unlink(missing_ok=True)
    try:
        for other_path in sorted(path.parent.glob(f"{stage}.part-*.lock")):
            other = _read_lock(other_path)
            if other_path != path and other and not _lock_is_dead(other) and _count(other_path) != part.count:
                raise _held(build, stage, other_path, other)
        yield
    finally:
        path.unlink(missing_ok=True)


def _count(path: Path) -> int:
    """The part count in a lock file's name (`{stage}.part-00000-of-00004.lock` -> 4)."""
    return int(path.stem.rsplit("-of-", 1)[1])


def _held(build: BuildDir, stage: str, path: Path, other: dict) -> BuildError:
    if not other:
        return BuildError(f"{path} is a lock file that names no holder; delete it if no ffx runs on {build}")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
    return BuildError(
        f"another {command_of(stage, stage)} is running on {build} ({other.get('part')}): "
        f"host {other.get('host')}, pid {other.get('pid')}, since {since}; wait for it, "
        f"or delete {path} if that process is gone"
    )


def _refuse_or_take_over(build: BuildDir, stage: str, path: Path) -> None:
    """Raise naming a live holder; move a dead holder's lock aside (exactly one run can)."""
    other = _read_lock(path)
    if other is None:
        return  # released meanwhile: try again
    if not _lock_is_dead(other):
        raise _held(build, stage, path, other)
    aside = path.with_name(f".{path.name}.dead.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run moved it first
    if _read_lock(aside) != other:  # it was a new holder's lock by then: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    """The holder a lock file names; None when there is no such file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # a garbage file (not ffx's): held, the message says how to remove it


def _lock_is_dead(holder: dict) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
