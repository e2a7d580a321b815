"""Issue 22: stages plug in through one registry. The engine, `ffx build`, `ffx status` and
`ffx slurm` read the stages from it; adding a stage is one module (`example_stage.py`, the
worked example of the docs' development page) and its registration."""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from ffx.cluster.slurm import parse_tasks, write_slurm_jobs
from ffx.errors import BuildError
from ffx.pipeline.engine import registry
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.lock import hold_lock
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.stage import StageReport, run_stage
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.status import build_status
from tests.conftest import REPO, touch
from tests.generated import FACELESS_KEY, make_cropped_build

DEVELOPMENT_PAGE = REPO / "docs" / "development.md"


def test_the_registry_holds_the_pipeline() -> None:
    assert registry.stage_names() == ("frames", "faces", "samples")
    assert registry.array_stages() == ("extract", "crop", "shard")
    commands = [registry.command_of(name) for name in ("videos", "frames", "faces", "samples")]
    assert commands == ["ffx index", "ffx extract", "ffx crop", "ffx shard"]
    assert registry.upstream_chain("samples") == ("videos", "frames", "faces", "samples")
    with pytest.raises(ValueError, match="no stage makes table 'shards'; the stages make frames, faces"):
        registry.stage_class("shards")


@pytest.fixture
def sharpness(monkeypatch):
    """The example stage registered for this test only (the registry is restored after it)."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    module = importlib.import_module("tests.pipeline.example_stage")
    registry.register_stage(module.SharpnessStage)  # its import registered it once, in another test
    return module


def laplacian_variance(grey: np.ndarray) -> float:
    """The reference: the 4-neighbour Laplacian with mirrored borders (OpenCV's default
    BORDER_REFLECT_101 is numpy's `reflect`), then its population variance."""
    padded = np.pad(grey.astype(np.float64), 1, mode="reflect")
    centre = padded[1:-1, 1:-1]
    laplacian = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * centre
    return float(laplacian.var())


def test_a_stage_is_one_module_and_its_registration(sharpness, tmp_path: Path) -> None:
    assert registry.stage_names() == ("frames", "faces", "samples", "sharpness")
    assert registry.upstream_chain("sharpness") == ("videos", "frames", "faces", "sharpness")
    assert registry.command_of("sharpness") == "ffx sharpness"
    assert registry.array_stages() == ("extract", "crop", "shard")  # array = False
    build = make_cropped_build(tmp_path, videos_per_label=2, frames=3)

    report = run_stage(sharpness.SharpnessStage(), build, workers=2, show_progress=False)
    assert (report.items, report.skipped, report.outputs, report.merged) == (5, 0, 12, True)
    rows = pq.read_table(build / "sharpness.parquet").to_pylist()
    assert len(rows) == 13  # 4 videos x 3 crops, and one row for the video without a face
    for row in rows:
        if row["key"] == FACELESS_KEY:
            assert (row["status"], row["error"], row["sharpness"]) == ("no_face", "no face crop", None)
            continue
        grey = cv2.imread(
            str(build / f"faces/{row['key']}/{row['frame_index']:06d}.png"), cv2.IMREAD_GRAYSCALE
        )
        assert row["sharpness"] == pytest.approx(laplacian_variance(grey), rel=1e-9)

    again = run_stage(sharpness.SharpnessStage(), build, workers=2, show_progress=False)
    assert (again.items, again.skipped, again.merged) == (5, 5, True)
    stages = {status.stage: status for status in build_status(build)}
    assert stages["sharpness"].currency.ok and stages["sharpness"].videos == 5
    # The engine's lock and messages name the new stage's command.
    with (
        hold_lock(BuildDir(build), "sharpness", Part()),
        pytest.raises(BuildError, match="another ffx sharpness is running"),
    ):
        run_stage(sharpness.SharpnessStage(), build, show_progress=False, options={"seed": 1})


def test_ffx_build_and_ffx_slurm_take_their_steps_from_the_registry(
    sharpness, tmp_path: Path, monkeypatch
) -> None:
    ran = []

    def step(name: str, merged: bool):
        def build_step(cls, build, options) -> StageReport:
            ran.append((name, options.part.name, options.device))
            return StageReport(name, "items", merged=merged)

        return classmethod(build_step)

    for name in ("frames", "faces", "samples"):
        monkeypatch.setattr(registry.stage_class(name), "build_step", step(name, True))
    monkeypatch.setattr(sharpness.SharpnessStage, "build_step", step("sharpness", False))
    monkeypatch.setattr("ffx.pipeline.stages.build.write_build_record", lambda *a, **k: None)
    root = tmp_path / "data"
    for label in ("real", "fake"):
        touch(root, f"{label}/clip.mp4")
    report = run_build(load_manifest("folder"), root, tmp_path / "build", part=Part(1, 2), device="cpu")
    assert ran == [
        (name, "part-00001-of-00002", "cpu") for name in ("frames", "faces", "samples", "sharpness")
    ]
    assert report.waiting == "sharpness"  # the step that did not merge: the other parts must finish

    # `ffx slurm` writes an array per stage that asks for one.
    monkeypatch.setattr(sharpness.SharpnessStage, "array", True)
    assert parse_tasks("4") == {"extract": 4, "crop": 4, "shard": 4, "sharpness": 4}
    jobs = write_slurm_jobs(
        "folder", root, tmp_path / "build", tmp_path / "jobs", tasks=parse_tasks("sharpness=3")
    )
    assert list(jobs.scripts) == ["index", "extract", "crop", "shard", "sharpness"]
    script = jobs.scripts["sharpness"].read_text()
    assert (
        "#SBATCH --array=0-2" in script
        and "sharpness /" in script
        and '--part "$SLURM_ARRAY_TASK_ID/3"' in script
    )


def test_the_docs_show_the_example_stage_as_it_is_tested() -> None:
    code = (REPO / "tests" / "pipeline" / "example_stage.py").read_text(encoding="utf-8")
    body = code.split('"""', 2)[2].strip()  # without its docstring
    assert body in DEVELOPMENT_PAGE.read_text(encoding="utf-8")
