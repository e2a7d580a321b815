"""Issue 24: `ffx diff` says which videos, samples and shards differ between two builds and why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.cli import main
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.diff import diff_builds
from tests.generated import portrait_clip

RECIPE = {"sampling": "first:3", "crop.size": 96}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Four builds of three portrait clips: A; the same again; one clip replaced; another crop size."""
    folder = tmp_path_factory.mktemp("diff")
    clips = folder / "clips"
    for number in range(3):
        portrait_clip(clips / "real" / f"clip{number}.mp4", 4, phase=number * 0.9)
    replaced = folder / "replaced-clips"
    shutil.copytree(clips, replaced)
    portrait_clip(replaced / "real" / "clip1.mp4", 5, phase=2.5)  # another clip under the same name
    made = {}
    for name, root, recipe in (
        ("a", clips, RECIPE),
        ("again", clips, RECIPE),
        ("replaced", replaced, RECIPE),
        ("size", clips, RECIPE | {"crop.size": 64}),
    ):
        made[name] = folder / name
        run_build(load_manifest("folder", recipe), root, made[name], workers=1, show_progress=False)
    return made


def test_two_builds_of_the_same_clips_are_identical(builds: dict[str, Path], capsys) -> None:
    result = diff_builds(builds["a"], builds["again"])
    assert result.identical_shards and not result.settings
    assert all(not stage.counts for stage in result.stages)
    assert [stage.stage for stage in result.stages] == ["videos", "frames", "faces", "samples"]
    assert main(["diff", str(builds["a"]), str(builds["again"])]) == 0


def test_a_replaced_video_is_an_input_in_every_stage(builds: dict[str, Path], capsys) -> None:
    result = diff_builds(builds["a"], builds["replaced"])
    assert {stage.stage: dict(stage.counts) for stage in result.stages} == {
        stage: {"input": 1} for stage in ("videos", "frames", "faces", "samples")
    }
    assert result.stages[0].examples["input"][0].startswith("real__clip1: size_bytes")
    assert not result.identical_shards
    capsys.readouterr()
    assert main(["diff", str(builds["a"]), str(builds["replaced"]), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["stages"][1] == {
        "stage": "frames",
        "videos": 3,
        "differ": {"input": 1},
        "examples": {"input": found["stages"][1]["examples"]["input"]},
    }
    assert found["shards"]["identical"] is False


def test_another_crop_size_is_a_setting_named_with_both_values(builds: dict[str, Path], capsys) -> None:
    result = diff_builds(builds["a"], builds["size"])
    assert result.settings == [("crop.size", 96, 64)]
    counts = {stage.stage: dict(stage.counts) for stage in result.stages}
    assert counts == {"videos": {}, "frames": {}, "faces": {"setting": 3}, "samples": {"setting": 3}}
    capsys.readouterr()
    assert main(["diff", str(builds["a"]), str(builds["size"])]) == 1
    assert "setting crop.size: 96 in A, 64 in B" in capsys.readouterr().out


def nudged_copy(build: Path, copy: Path, record_change: dict) -> Path:
    """A copy of `build` whose first face box is 1e-4 px off (as another CPU's kernels may give)
    and whose build.json has `record_change` applied."""
    shutil.copytree(build, copy)
    faces = pq.read_table(copy / "faces.parquet")
    x1 = faces.column("x1").to_pylist()
    x1[0] += 1e-4
    pq.write_table(
        faces.set_column(faces.schema.get_field_index("x1"), "x1", pa.array(x1, pa.float32())),
        copy / "faces.parquet",
    )
    record = json.loads((copy / "build.json").read_text())
    for name, value in record_change.items():
        place, leaf = record, name.split(".")
        for part in leaf[:-1]:
            place = place[part]
        place[leaf[-1]] = value
    (copy / "build.json").write_text(json.dumps(record))
    return copy


def test_other_floats_are_a_version_or_numerics_with_the_machines_named(
    builds: dict[str, Path], tmp_path: Path, capsys
) -> None:
    kernels = nudged_copy(
        builds["a"],
        tmp_path / "kernels",
        {"made_on.frames+faces": [{"cpu_kernels": "default", "device": "cpu"}]},
    )
    result = diff_builds(builds["a"], kernels)
    counts = {stage.stage: dict(stage.counts) for stage in result.stages}
    assert counts == {"videos": {}, "frames": {}, "faces": {"numerics": 1}, "samples": {}}
    assert result.versions == {} and result.identical_shards
    assert result.machines["frames+faces"][1] == "default cpu"
    assert main(["diff", str(builds["a"]), str(kernels)]) == 0  # the shards are identical
    assert "frames+faces ran on" in capsys.readouterr().out
    torch = nudged_copy(builds["a"], tmp_path / "torch", {"libraries.torch": "0.0.test"})
    result = diff_builds(builds["a"], torch)
    assert {stage.stage: dict(stage.counts) for stage in result.stages}["faces"] == {"version": 1}
    assert list(result.versions) == ["torch"] and result.versions["torch"][1] == "0.0.test"
    locked = nudged_copy(builds["a"], tmp_path / "lock", {"requirements_lock_sha256": "f" * 64})
    assert diff_builds(builds["a"], locked).versions["requirements.lock"] == (
        json.loads((builds["a"] / "build.json").read_text())["requirements_lock_sha256"][:16],
        "f" * 16,
    )
