"""Issue 23: a rerun with nothing to do is linear in the build. Its file-system calls, and the
names its directory listings return, at 2N videos are at most twice those at N plus a constant
(counted, not timed: a shared folder listed once per video is N listings of N names, which a count
of calls alone would miss). A part that is not the last reads no other part's rows, and the last
merges once."""

from __future__ import annotations

import builtins
import os
from collections import Counter
from pathlib import Path

import pytest

from ffx.pipeline.engine import registry, store
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
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


def test_a_part_reads_only_its_own_rows_and_the_last_merges_once(tmp_path: Path, monkeypatch) -> None:
    read: list[Path] = []
    merged: list[str] = []
    read_chunk, write_merged = store.Ledger._read, store.Ledger.write_merged
    monkeypatch.setattr(store.Ledger, "_read", lambda self, path: read.append(path) or read_chunk(self, path))
    monkeypatch.setattr(
        store.Ledger,
        "write_merged",
        lambda self, table: merged.append(self.stage) or write_merged(self, table),
    )
    build = make_cropped_build(tmp_path / "parts", videos_per_label=4, frames=2, side=16)
    for index in range(3):
        read.clear()
        report = run_shard(build, part=Part(index, 3), workers=1, show_progress=False)
        folders = {path.parent.name for path in read if path.parent.name.startswith("part-")}
        if index < 2:
            assert not report.merged and folders <= {Part(index, 3).name}  # nothing of the others
        else:  # the last part: its own rows, then every part's for the merge
            assert report.merged and folders == {Part(number, 3).name for number in range(3)}
    assert merged == ["samples"]
    # The same shards as one part gives.
    whole = make_cropped_build(tmp_path / "whole", videos_per_label=4, frames=2, side=16)
    run_shard(whole, workers=1, show_progress=False)
    for name in ("index.json", *(path.name for path in (whole / "shards").glob("*.tar"))):
        assert (build / "shards" / name).read_bytes() == (whole / "shards" / name).read_bytes(), name


def test_a_no_op_build_and_its_status_plan_each_stage_once(tmp_path: Path, monkeypatch) -> None:
    """Planning digests every video's inputs: a no-op `ffx build` (then `ffx status`) plans each
    stage once; the checks after a stage reuse what its run found."""
    build = make_cropped_build(tmp_path, videos_per_label=3, frames=2, side=16)
    run_shard(build, workers=1, show_progress=False)
    plans: Counter = Counter()
    for name in registry.stage_names():
        cls = registry.stage_class(name)

        def counted(self, *args, _plan=cls.plan, _name=name):
            plans[_name] += 1
            return _plan(self, *args)

        monkeypatch.setattr(cls, "plan", counted)
    report = run_build(load_manifest("folder"), tmp_path / "data", build, workers=1, show_progress=False)
    assert [stage.done_now for stage in report.stages] == [0, 0, 0] and not report.waiting
    build_status(build)
    assert plans == {"frames": 1, "faces": 1, "samples": 1}
