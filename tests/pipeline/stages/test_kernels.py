"""Issue 24: shards fixed by their pixels. The same clips built with the CPU's best kernels and with
the baseline kernels a CPU without AVX would use give byte-identical shards: the detector's floats,
which may differ in their last digits, stay in faces.parquet unless `shard.detector_outputs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from ffx.pipeline.stages.diff import diff_builds
from tests.generated import portrait_clip

BASELINE_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
BUILD = (
    "import sys; from ffx.pipeline.recipe.manifest import load_manifest; "
    "from ffx.pipeline.stages.build import run_build; "
    "run_build(load_manifest('folder', {'sampling': 'first:4', 'crop.size': 96}), sys.argv[1], sys.argv[2], "
    "workers=1, show_progress=False)"
)


def build_with(clips: Path, build: Path, kernels: dict[str, str]) -> dict:
    environment = {name: value for name, value in os.environ.items() if name not in BASELINE_KERNELS}
    subprocess.run(
        [sys.executable, "-c", BUILD, str(clips), str(build)], env=environment | kernels, check=True
    )
    return json.loads((build / "shards" / "index.json").read_text())


def test_baseline_kernels_give_the_same_shards(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    for number in range(3):
        portrait_clip(clips / ("real" if number < 2 else "fake") / f"clip{number}.mp4", 5, phase=number * 0.9)
    best = build_with(clips, tmp_path / "best", {})
    baseline = build_with(clips, tmp_path / "baseline", BASELINE_KERNELS)
    assert [entry["sha256"] for entry in best["shards"]] == [entry["sha256"] for entry in baseline["shards"]]
    assert sum(entry["samples"] for entry in best["shards"]) == 12  # 3 clips, first:4, a face each
    # What may differ is kept where it belongs: the crops' windows agree, the floats are recorded.
    windows = [
        pq.read_table(build / "faces.parquet", columns=["key", "crop_x1", "crop_y1", "crop_x2", "crop_y2"])
        for build in (tmp_path / "best", tmp_path / "baseline")
    ]
    assert windows[0].equals(windows[1])
    # build.json names the kernels detection ran on: the baseline build's are `default`.
    made_on = [
        json.loads((tmp_path / build / "build.json").read_text())["made_on"] for build in ("best", "baseline")
    ]
    assert [machine["cpu_kernels"] for machine in made_on[1]["frames+faces"]] == ["default"]
    assert [machine["device"] for machine in made_on[0]["frames+faces"]] == ["cpu"]
    # What `ffx diff` says: the same videos and frames, at most the detector's floats ("numerics").
    result = diff_builds(tmp_path / "best", tmp_path / "baseline")
    counts = {stage.stage: set(stage.counts) for stage in result.stages}
    assert result.identical_shards and counts["videos"] == counts["frames"] == set()
    assert counts["faces"] <= {"numerics"} and counts["samples"] == set()
