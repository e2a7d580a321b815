"""Issue 23's table-only generator (bench/common/tables.py, made by bench/scale_tables.py): a finished
build whose no-op is a real no-op, every file its tables name in place as a hard link, each video with
its own clip's rows."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from bench.common.tables import make_table_only, recipe_settings
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.status import build_status


def test_a_table_only_build_is_finished_and_its_rerun_does_nothing(tmp_path: Path) -> None:
    frames = 3
    build = make_table_only(tmp_path, 40, distinct=12, frames=frames).root
    videos = pq.read_table(build / "videos.parquet").column("key").to_pylist()
    assert len(videos) == 40
    for stage in ("frames", "faces", "samples"):
        rows = Counter(pq.read_table(build / f"{stage}.parquet").column("key").to_pylist())
        assert rows == dict.fromkeys(videos, frames), stage  # every video, one row a frame
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    prototype = tmp_path / "prototype" / "build"
    for row in faces:  # each crop is its clip's crop: a link to the prototype's file
        crop = build / row["path"]
        assert crop.is_file() and crop.stat().st_nlink >= 2 and row["key"] in row["path"]
    assert {os.stat(build / row["path"]).st_ino for row in faces} <= {
        path.stat().st_ino for path in (prototype / "faces").rglob("*.png")
    }
    manifest = load_manifest("dfdc", recipe_settings(frames))
    report = run_build(manifest, tmp_path / "tree", build, workers=1, show_progress=False)
    assert [stage.done_now for stage in report.stages] == [0, 0, 0] and not report.waiting
    assert not (build / "runs.jsonl").exists()  # no stage ran
    assert all(status.currency is None or status.currency.ok for status in build_status(build))
