"""One run of a stage per part at a time: an O_EXCL lock file in the build directory.

O_EXCL creation is atomic on local disks and on NFS (v3 and later) and Lustre, where flock may be
missing or local to one node; the file names its holder so a second run can say who it is.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ffx.errors import BuildError
from ffx.pipeline.engine.builddir import COMMANDS, BuildDir
from ffx.pipeline.engine.parts import Part


@contextmanager
def hold_lock(build: BuildDir, stage: str, part: Part):
    """Hold `stage`'s lock for `part`: an O_EXCL lock file (it works on NFS and Lustre too) naming
    host, pid and start time. A second run exits naming the holder; a lock left by a process that
    is gone on this host is taken over."""
    path = build.lock(stage, part.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _attempt in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(path)
            if other is not None and not _lock_is_dead(other):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
                raise BuildError(
                    f"another {COMMANDS.get(stage, stage)} is running on {build} ({part.name}): "
                    f"host {other.get('host')}, pid {other.get('pid')}, since {since}; wait for it, "
                    f"or delete {path} if that process is gone"
                ) from None
            path.unlink(missing_ok=True)  # its process is gone: take the lock over
            continue
        with os.fdopen(handle, "w") as lock_file:
            json.dump(holder, lock_file)
        break
    else:
        raise BuildError(f"could not take the lock {path}; delete it if no ffx runs on {build}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written right now, or garbage: treated as held unless old


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
