"""Facts a command proved about a build, remembered while the files they were drawn from stay the same.

At DFDC's size (3.6 M rows per stage table) a rerun with nothing to do would otherwise digest every
row again to find what the last run found. A fact is kept in BUILD/.memo/{name}.json with the size
and sha256 of each file it was drawn from and the ffx version that drew it, and is recalled only
while every one of those files holds the same bytes (each hashed once per process: a table of
3.6 M rows is tens of MB). Content, not inode or mtime: a copied build keeps its facts, and a table
rewritten within one tick of a coarse file-system clock (1 s on some cluster mounts) is not taken
for the old one. A build that cannot be written proves its facts each time.

No pyarrow here: worker processes import it cheaply.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ffx import __version__
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir


def file_states(paths: Iterable[Path]) -> list[list | None]:
    """Each file's [size, sha256], None for a file that is not there."""
    return [atomic.content_state(Path(path)) for path in paths]


def recall(build: BuildDir, name: str, states: list[list | None]) -> Any:
    """The fact remembered as `name` when it was drawn from files in exactly these `states`
    (see `file_states`) by this ffx version; else None."""
    try:
        record = json.loads(build.memo(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != __version__ or record.get("files") != states:
        return None
    return record.get("fact")


def remember(build: BuildDir, name: str, states: list[list | None], fact: Any) -> None:
    """Keep `fact` (JSON) as `name`, drawn from files in these `states` (taken before they were
    read, so a file replaced meanwhile never matches them again). The same record is not written
    again (`atomic.write_bytes`), so a rerun with nothing to do writes nothing."""
    if any(state is None for state in states):
        return  # drawn from a file that is not there: nothing to tell it by
    with contextlib.suppress(OSError):  # a read-only build proves it again next time
        atomic.write_json(build.memo(name), {"version": __version__, "files": states, "fact": fact})
