"""Issue 24: a build whose dataset is mounted at another path (another machine, a compute node)
resumes with nothing redone; the commands that read videos take `--root`; `ffx status` says when
the recorded root is not there; `ffx slurm --root` gives the compute nodes' root to those arrays."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ffx.cli import main
from ffx.cluster.slurm import write_slurm_jobs
from ffx.pipeline.engine.statuses import Status
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.crop import run_crop
from tests.generated import portrait_clip

RECIPE = {"sampling": "first:3", "crop.size": 96}


def face_statuses(build: Path, key: str) -> set[str]:
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    return {row["status"] for row in faces if row["key"] == key}


def test_a_build_follows_its_dataset_to_another_mount_path(tmp_path: Path, capsys) -> None:
    login = tmp_path / "login-mount"
    for number in range(2):
        portrait_clip(login / "real" / f"clip{number}.mp4", 4, phase=number * 0.9)
    build = tmp_path / "build"
    run_build(load_manifest("folder", RECIPE), login, build, workers=1, show_progress=False)

    node = tmp_path / "node-mount"
    login.rename(node)  # the same files, seen at another path
    capsys.readouterr()
    assert main(["status", str(build)]) == 0
    assert "is not there" in capsys.readouterr().out  # and says to pass --root

    report = run_build(load_manifest("folder", RECIPE), node, build, workers=1, show_progress=False)
    assert [stage.done_now for stage in report.stages] == [0, 0, 0]  # nothing redone for the move

    elsewhere = tmp_path / "third-mount"
    node.rename(elsewhere)
    (build / "faces" / "real__clip1" / "000000.png").unlink()  # its frames were not kept: decode again
    assert run_crop(build, workers=1, show_progress=False).done_now == 1
    assert face_statuses(build, "real__clip1") == {Status.MISSING.value}  # the video is not where indexed
    report = run_crop(build, workers=1, show_progress=False, root=elsewhere)
    assert report.done_now == 1 and face_statuses(build, "real__clip1") == {Status.OK.value}


def test_slurm_gives_the_compute_nodes_root_to_the_arrays_that_read_videos(tmp_path: Path) -> None:
    root = Path("/cluster/datasets/dfdc")  # how the compute nodes mount it
    jobs = write_slurm_jobs("demo", root, tmp_path / "build", tmp_path / "jobs")
    scripts = {name: path.read_text() for name, path in jobs.scripts.items()}
    for stage in ("extract", "crop"):
        assert f"--root {root} --part" in scripts[stage], stage
    assert "--root" not in scripts["shard"]
    assert f"--root {root}" in scripts["index"]
