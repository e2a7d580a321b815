"""`ffx extract` end to end: frames on disk, statuses for every bad input, resume, partitions."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from ffx.cli import main
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.status import build_status
from ffx.synthetic import decode_frame_index, write_h264_index_video, write_index_video
from tests.assertions import kill_mid_run
from tests.conftest import SHARED_MEDIA

WIDTH, HEIGHT = 96, 64


def write_audio_only(path: Path) -> Path:
    """An .mp4 holding a short silent AAC track and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for number in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, number * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def index_folder(root: Path, build: Path) -> Path:
    run_index(load_manifest("folder"), root, build)
    return build


def frames_by_key(build: Path) -> dict[str, list[dict]]:
    rows = pq.read_table(build / "frames.parquet").to_pylist()
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["key"], []).append(row)
    return grouped


def tree_digest(build: Path) -> dict[str, str]:
    """sha256 of every file under frames/ plus the merged table."""
    files = [*sorted(build.glob("frames/**/*.png")), build / "frames.parquet"]
    return {str(path.relative_to(build)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@pytest.fixture
def messy_dataset(tmp_path: Path) -> Path:
    """Good clips next to every kind of bad input the issue lists."""
    root = tmp_path / "data"
    write_h264_index_video(root / "real" / "good_h264.mp4", 40, WIDTH, HEIGHT)
    write_index_video(root / "real" / "good_mpeg4.mp4", 40, WIDTH, HEIGHT)
    write_h264_index_video(root / "real" / "clip é 1.mp4", 32, WIDTH, HEIGHT)
    write_h264_index_video(root / "fake" / "short.mp4", 10, WIDTH, HEIGHT)
    whole = write_h264_index_video(root / "fake" / "cut.mp4", 40, WIDTH, HEIGHT).read_bytes()
    (root / "fake" / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "fake" / "empty.mp4").write_bytes(b"")
    (root / "fake" / "notes.mp4").write_text("this is not a video\n")
    (root / "fake" / "photo.mp4").write_bytes(
        cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    )
    write_audio_only(root / "fake" / "audio.mp4")
    write_h264_index_video(root / "fake" / "gone.mp4", 5, WIDTH, HEIGHT)
    return root


def test_every_video_gets_a_status_and_good_frames_land_exactly(messy_dataset: Path, tmp_path: Path) -> None:
    build = index_folder(messy_dataset, tmp_path / "build")
    (messy_dataset / "fake" / "gone.mp4").unlink()
    report = run_extract(build, workers=2, show_progress=False)
    by_key = frames_by_key(build)
    status = {key: rows[0]["status"] for key, rows in by_key.items()}
    assert report.merged and report.items == 10 and sum(report.items_by_status.values()) == 10
    assert status == {
        "real__good_h264": "ok",
        "real__good_mpeg4": "ok",
        next(key for key in status if key.startswith("real__clip")): "ok",
        "fake__short": "short",
        "fake__cut": "partial",
        "fake__empty": "decode_error",
        "fake__notes": "decode_error",
        "fake__photo": "decode_error",
        "fake__audio": "decode_error",
        "fake__gone": "missing",
    }
    assert report.items_by_status == {"ok": 3, "short": 1, "partial": 1, "decode_error": 4, "missing": 1}
    frames_stage = next(stage for stage in build_status(build) if stage.stage == "frames")
    assert frames_stage.items == report.items_by_status and frames_stage.videos == 10 and frames_stage.merged
    assert frames_stage.rows["ok"] == 3 * 30 and frames_stage.rows["decode_error"] == 4
    errors = {key: rows[0]["error"] for key, rows in by_key.items()}
    assert errors["fake__empty"] == "empty file (0 bytes)"
    assert "Invalid data" in errors["fake__notes"]
    assert "still image" in errors["fake__photo"]
    assert "no video stream (audio)" in errors["fake__audio"]
    assert "file not found" in errors["fake__gone"]
    assert "10 frames; 10 of 30" in errors["fake__short"]

    for key, rows in by_key.items():
        got = rows[0]["frames_got"]
        if got == 0:
            assert [(row["frame_index"], row["path"]) for row in rows] == [(-1, "")]
            assert not (build / "frames" / key).exists()
            continue
        assert [row["frame_index"] for row in rows] == list(range(got))
        assert sorted(p.name for p in (build / "frames" / key).iterdir()) == [
            f"{i:06d}.png" for i in range(got)
        ]
        for row in rows:
            bgr = cv2.imread(str(build / row["path"]), cv2.IMREAD_UNCHANGED)
            assert bgr.shape == (HEIGHT, WIDTH, 3) == (row["height"], row["width"], 3)
            assert decode_frame_index(bgr[..., ::-1]) == row["frame_index"]
    assert len(by_key["real__good_h264"]) == 30 and by_key["real__good_h264"][0]["backend"] == "pyav"
    assert (
        by_key["real__good_h264"][0]["video_frames"] == 40 and by_key["real__good_h264"][0]["codec"] == "h264"
    )
    cut = by_key["fake__cut"]
    assert 0 < cut[0]["frames_got"] < 30 and cut[0]["backend"] in ("pyav", "opencv")
    assert "decord" in cut[0]["error"]  # why the other decoders were passed over is kept
    assert not list((build / "frames").glob(".*"))  # no temporary folder survives


def test_fail_on_error_exits_non_zero_and_lists_failures(messy_dataset: Path, tmp_path: Path, capsys) -> None:
    build = index_folder(messy_dataset, tmp_path / "build")
    assert main(["extract", str(build), "--workers", "1", "--fail-on-error"]) == 1
    out = capsys.readouterr().out
    assert "decode_error 4" in out and "fake__empty: empty file (0 bytes)" in out
    # A second run has nothing left to do and keeps the same verdict.
    assert main(["extract", str(build), "--workers", "1", "--fail-on-error"]) == 0
    assert "10 already current" in capsys.readouterr().out


def test_retry_failed_redoes_only_failed_videos(messy_dataset: Path, tmp_path: Path) -> None:
    build = index_folder(messy_dataset, tmp_path / "build")
    run_extract(build, workers=2, show_progress=False)
    write_h264_index_video(messy_dataset / "fake" / "empty.mp4", 40, WIDTH, HEIGHT)  # the user fixed it
    report = run_extract(build, workers=2, show_progress=False, retry_failed=True)
    assert report.skipped == 5  # ok and short videos stay as they were
    assert frames_by_key(build)["fake__empty"][0]["status"] == "ok"
    assert len(frames_by_key(build)["fake__empty"]) == 30


def test_a_changed_sampling_goes_into_the_recipe_and_redoes_the_videos(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_h264_index_video(root / "a.mp4", 12, WIDTH, HEIGHT)
    build = index_folder(root, tmp_path / "build")
    run_extract(build, workers=1, show_progress=False, sampling="first:5")
    assert len(frames_by_key(build)["a"]) == 5
    report = run_extract(build, workers=1, show_progress=False, sampling="first:8")
    assert (report.redone, report.skipped) == (1, 0)
    assert [row["frame_index"] for row in frames_by_key(build)["a"]] == list(range(8))
    pngs = sorted(path.name for path in (build / "frames" / "a").iterdir())
    assert pngs == [f"{index:06d}.png" for index in range(8)]
    assert 'sampling = "first:8"' in (build / "manifest.toml").read_text()
    assert run_extract(build, workers=1, show_progress=False).skipped == 1  # the recipe now says first:8


def test_a_hanging_input_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_h264_index_video(root / "fine.mp4", 30, WIDTH, HEIGHT)
    write_h264_index_video(root / "stuck.mp4", 12, WIDTH, HEIGHT)
    build = index_folder(root, tmp_path / "build")
    (root / "stuck.mp4").unlink()
    os.mkfifo(root / "stuck.mp4")  # opening it blocks forever: a stand-in for a hung decoder
    report = run_extract(build, workers=2, show_progress=False, stall_seconds=3)
    rows = frames_by_key(build)
    assert rows["stuck"][0]["status"] == "timeout" and "no progress for 3 s" in rows["stuck"][0]["error"]
    assert rows["fine"][0]["status"] == "ok" and report.items_by_status == {"ok": 1, "timeout": 1}


def make_clean_dataset(root: Path, videos: int) -> Path:
    for number in range(videos):
        write_index_video(root / f"clip_{number:02d}.mp4", 36, WIDTH, HEIGHT)
    return root


def test_two_parts_equal_one_run(tmp_path: Path) -> None:
    root = make_clean_dataset(tmp_path / "data", 5)
    whole = index_folder(root, tmp_path / "whole")
    split = index_folder(root, tmp_path / "split")
    run_extract(whole, workers=2, show_progress=False)
    first = run_extract(split, part=Part(0, 2), workers=1, show_progress=False)
    assert first.items == 3 and not first.merged and not (split / "frames.parquet").exists()
    second = run_extract(split, part=Part(1, 2), workers=1, show_progress=False)
    assert second.items == 2 and second.merged
    assert tree_digest(split) == tree_digest(whole)
    assert len(tree_digest(whole)) == 5 * 30 + 1


def test_kill_9_then_resume_is_byte_identical(tmp_path: Path) -> None:
    root = make_clean_dataset(tmp_path / "data", 12)
    reference = index_folder(root, tmp_path / "reference")
    run_extract(reference, workers=1, show_progress=False)
    build = index_folder(root, tmp_path / "build")
    script = (
        "import sys; from ffx.pipeline.stages.extract import run_extract; "
        "run_extract(sys.argv[1], workers=1, show_progress=False, flush_seconds=0)"
    )
    kill_mid_run(script, [str(build)], build, "frames", chunks=3, seconds=120)
    resumed = run_extract(build, workers=1, show_progress=False)
    assert resumed.skipped >= 3 and resumed.skipped + sum(resumed.items_by_status.values()) == 12
    assert tree_digest(build) == tree_digest(reference)
    assert not list((build / "frames").glob(".*"))


@pytest.mark.skipif(not (SHARED_MEDIA / "videos").is_dir(), reason="../shared/media not present")
def test_real_clips_give_30_exact_frames_at_native_resolution(tmp_path: Path) -> None:
    root = tmp_path / "media"
    shutil.copytree(SHARED_MEDIA / "videos", root)
    build = index_folder(root, tmp_path / "build")
    run_extract(build, show_progress=False)
    by_key = frames_by_key(build)
    sizes = {key: {(row["width"], row["height"]) for row in rows} for key, rows in by_key.items()}
    assert sizes == {
        "liveportrait_d18": {(480, 480)},
        "liveportrait_d19": {(480, 480)},
        "facenet_pytorch_video": {(1920, 1080)},
        "face_recognition_short_hamilton_clip": {(640, 360)},
    }
    for key, rows in by_key.items():
        assert [row["status"] for row in rows] == ["ok"] * 30
        capture = cv2.VideoCapture(str(root / f"{key}.mp4"))
        expected = [capture.read()[1] for _ in range(30)]
        for row in (rows[0], rows[17], rows[29]):
            written = cv2.imread(str(build / row["path"]), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(written, expected[row["frame_index"]]), (key, row["frame_index"])
