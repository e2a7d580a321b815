"""Issue 23: a rerun with nothing to do is linear in the build. Its file-system calls, and the
names its directory listings return, at 2N videos are at most twice those at N plus a constant
(counted, not timed: a shared folder listed once per video is N listings of N names, which a count
of calls alone would miss)."""

from __future__ import annotations

import builtins
import os
from collections import Counter
from pathlib import Path

import pytest

from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.stages.status import build_status
from tests.generated import make_cropped_build

CONSTANT = 150  # calls or names that do not depend on the number of videos (tables, recipe, shards)


@pytest.fixture
def file_system_calls(monkeypatch) -> Counter:
    """Counts of os.stat, lstat, listdir, scandir and open calls, and of the names listed."""
    counts: Counter = Counter()

    def counted(name: str, function, listing: bool = False):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            result = function(*args, **kwargs)
            if listing:
                result = list(result)
                counts["names listed"] += len(result)
            return result

        return wrapper

    for name in ("stat", "lstat"):
        monkeypatch.setattr(os, name, counted(name, getattr(os, name)))
    monkeypatch.setattr(os, "listdir", counted("listdir", os.listdir, listing=True))
    monkeypatch.setattr(os, "scandir", counted("scandir", os.scandir))
    monkeypatch.setattr(builtins, "open", counted("open", builtins.open))
    return counts


def no_op_counts(tmp_path: Path, videos_per_label: int, counts: Counter) -> dict[str, Counter]:
    """The counts of a rerun with nothing to do of each stage, and of `ffx status`."""
    build = make_cropped_build(tmp_path, videos_per_label=videos_per_label, frames=2, side=16)
    run_shard(build, workers=1, show_progress=False)
    found = {}
    for name, rerun in (
        ("extract", lambda: run_extract(build, show_progress=False)),
        ("crop", lambda: run_crop(build, show_progress=False)),
        ("shard", lambda: run_shard(build, show_progress=False)),
        ("status", lambda: build_status(build)),
    ):
        counts.clear()
        report = rerun()
        if name != "status":
            assert report.skipped == report.items == 2 * videos_per_label + 1  # nothing to do
        found[name] = Counter(counts)
    return found


def test_a_rerun_with_nothing_to_do_grows_linearly(tmp_path: Path, file_system_calls: Counter) -> None:
    small = no_op_counts(tmp_path / "n", 10, file_system_calls)
    large = no_op_counts(tmp_path / "2n", 20, file_system_calls)
    for name in small:
        for kind in ("stat", "lstat", "listdir", "scandir", "open", "names listed"):
            assert large[name][kind] <= 2 * small[name][kind] + CONSTANT, (
                name,
                kind,
                small[name],
                large[name],
            )
