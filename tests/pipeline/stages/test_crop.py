"""`ffx crop`: on real faces (../shared/media, when present) detection rate, boxes vs plain MTCNN,
tracking and statuses; on clips of the bundled demo portrait (always) box reuse for fakes, resume
after kill -9, partitions and worker counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffx.cli import main
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.media.faces import box_iou, mcx_api_box
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.shard import run_shard
from ffx.synthetic import dusk_frames, write_h264_video
from tests.assertions import crops_digest, faces_by_key, kill_mid_run
from tests.conftest import SHARED_MEDIA
from tests.generated import build_folder, index_folder, portrait_clip

needs_media = pytest.mark.skipif(not (SHARED_MEDIA / "videos").is_dir(), reason="../shared/media not present")
VIDEOS = SHARED_MEDIA / "videos"


def read_video(path: Path, frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    return [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(frames)]


@pytest.fixture(scope="module")
def media_build(tmp_path_factory) -> Path:
    """The four real clips plus a clip of the no-face photo, extracted and cropped once."""
    root = tmp_path_factory.mktemp("media")
    for video in VIDEOS.glob("*.mp4"):
        shutil.copy(video, root / video.name)
    coffee = cv2.cvtColor(
        cv2.imread(str(SHARED_MEDIA / "images" / "no_face_skimage_coffee.png")), cv2.COLOR_BGR2RGB
    )
    write_h264_video(root / "coffee.mp4", [np.roll(coffee, shift, axis=1) for shift in range(0, 40, 4)])
    build = build_folder(root, tmp_path_factory.mktemp("build") / "build")
    report = run_crop(build, show_progress=False)
    assert report.items == 5 and report.merged
    assert report.failed == [("coffee", "no_face", "no face found")]
    return build


@needs_media
def test_single_person_clips_have_a_face_in_almost_every_frame(media_build: Path) -> None:
    faces = faces_by_key(media_build)
    for key in ("liveportrait_d18", "liveportrait_d19"):
        ok = [row for row in faces[key] if row["status"] == "ok"]
        assert len(faces[key]) == 30 and len(ok) >= 0.95 * 30, key
        for row in ok:
            crop = cv2.imread(str(media_build / row["path"]))
            assert crop.shape == (512, 512, 3)
            assert row["prob"] >= 0.99 and row["box_source"] == "detected" and row["track"] == 0
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            expected = mcx_api_box(box, 480, 480)
            assert (row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]) == expected
            landmarks = np.array(row["landmarks"]).reshape(5, 2)
            inside = (landmarks[:, 0] > box[0] - 5) & (landmarks[:, 0] < box[2] + 5)
            assert inside.all()  # eyes, nose and mouth lie within the face box


@needs_media
def test_the_no_face_clip_has_no_face(media_build: Path) -> None:
    rows = faces_by_key(media_build)["coffee"]
    assert [row["status"] for row in rows] == ["no_face"] * 10
    assert {row["error"] for row in rows} == {"no face found"} and not (
        media_build / "faces" / "coffee"
    ).exists()


@needs_media
def test_boxes_match_plain_full_resolution_mtcnn(media_build: Path) -> None:
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=True, device="cpu")
    overlaps = []
    for key, rows in faces_by_key(media_build).items():
        if key == "coffee":
            continue
        frames = read_video(VIDEOS / f"{key}.mp4", 30)
        for row in rows[::6]:
            if row["status"] != "ok":
                continue
            boxes, _ = detector.detect(frames[row["frame_index"]])
            ours = (row["x1"], row["y1"], row["x2"], row["y2"])
            overlaps.append(max(box_iou(ours, box) for box in boxes))
    assert len(overlaps) >= 18 and float(np.median(overlaps)) >= 0.9


@needs_media
def test_tracking_keeps_one_identity_in_multi_face_clips(media_build: Path) -> None:
    faces = faces_by_key(media_build)
    for key in ("facenet_pytorch_video", "face_recognition_short_hamilton_clip"):
        rows = [row for row in faces[key] if row["status"] == "ok"]
        assert len(rows) >= 15 and max(row["n_faces"] for row in faces[key]) >= 2
        boxes = np.array([(row["x1"], row["y1"], row["x2"], row["y2"]) for row in rows])
        centres, widths = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2] - boxes[:, 0]
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert (steps < 0.6 * widths[1:]).all(), key  # each step is small next to the face: one person
    # In the concert clip a close-up of another person fills frames 22-27: not the main face.
    hamilton = {row["frame_index"]: row for row in faces["face_recognition_short_hamilton_clip"]}
    assert hamilton[24]["status"] == "no_face" and "main face is not in this frame" in hamilton[24]["error"]


@needs_media
def test_status_and_qa_show_the_crop_stage(media_build: Path, capsys) -> None:
    assert main(["status", str(media_build)]) == 0
    assert "faces" in capsys.readouterr().out
    assert main(["qa", str(media_build), "--videos", "2"]) == 0
    sheets = sorted(path.name for path in (media_build / "qa").glob("*.png"))
    assert sheets == ["coffee.png", "face_recognition_short_hamilton_clip.png"]  # most faceless first
    sheet = cv2.imread(str(media_build / "qa" / "coffee.png"))
    assert sheet.shape == (112, 10 * 112, 3)


def test_fakes_reuse_their_originals_boxes(tmp_path: Path) -> None:
    """An FF++ tree of portrait clips: the fake is its original with the face region altered; the
    FF++ recipe reuses the original's boxes by default."""
    root = tmp_path / "ffpp"
    originals = "original_sequences/youtube/c23/videos"
    portrait_clip(root / originals / "000.mp4", 10, 0.0)
    portrait_clip(root / originals / "001.mp4", 10, 1.7)
    portrait_clip(root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4", 10, 0.0, fake=True)
    build = tmp_path / "build"
    recipe = load_manifest(
        "ffpp-c23", {"sampling": "first:10", "crop.size": 128}, ['layout.methods=["Deepfakes"]']
    )
    assert recipe.crop.boxes_from_original
    run_index(recipe, root, build)
    run_extract(build, show_progress=False)
    report = run_crop(build, show_progress=False)
    assert report.counts == {"frames detected": 20, "boxes reused": 10}  # the fake was never detected
    faces = faces_by_key(build)
    fake_key = next(key for key in faces if "Deepfakes" in key)
    original = {row["frame_index"]: row for row in faces[next(key for key in faces if key.endswith("000"))]}
    assert len(faces[fake_key]) == 10
    for row in faces[fake_key]:
        assert row["box_source"] == "original" and row["status"] == "ok"
        assert (row["x1"], row["y1"], row["x2"], row["y2"]) == tuple(
            original[row["frame_index"]][name] for name in ("x1", "y1", "x2", "y2")
        )
    # Detecting fakes instead is a change of the recipe: only the fake is redone.
    report = run_crop(build, boxes_from_original=False, show_progress=False)
    assert (report.redone, report.skipped, report.counts["frames detected"]) == (1, 2, 10)
    assert {row["box_source"] for row in faces_by_key(build)[fake_key]} == {"detected"}


@pytest.fixture
def small_faces(tmp_path: Path) -> Path:
    """Six short portrait clips: enough items for resume and parts, no media needed."""
    root = tmp_path / "faces"
    for number in range(6):
        portrait_clip(root / f"clip_{number}.mp4", 8, phase=number * 0.9)
    return root


def test_parts_and_worker_counts_give_identical_crops_and_shards(small_faces: Path, tmp_path: Path) -> None:
    """One run on two workers, and three parts on one worker each: the same bytes (detection runs one
    torch thread whatever the worker count, so boxes do not move with it)."""
    whole = build_folder(small_faces, tmp_path / "whole", "first:6", 128)
    run_crop(whole, workers=2, show_progress=False)
    run_shard(whole, workers=2, show_progress=False)
    split = index_folder(small_faces, tmp_path / "split", "first:6", 128)
    for run in (run_extract, run_crop, run_shard):
        reports = [run(split, part=Part(number, 3), workers=1, show_progress=False) for number in range(3)]
        assert [report.merged for report in reports] == [False, False, True]
    assert crops_digest(split) == crops_digest(whole) and len(crops_digest(whole)) == 6 * 6 + 1
    shards = sorted((whole / "shards").glob("*.tar"))
    assert shards and all((split / "shards" / path.name).read_bytes() == path.read_bytes() for path in shards)
    assert sorted(path.name for path in (split / "shards").glob("*.tar")) == [path.name for path in shards]


def test_kill_9_then_resume_is_byte_identical(small_faces: Path, tmp_path: Path) -> None:
    reference = build_folder(small_faces, tmp_path / "reference", "first:6", 128)
    run_crop(reference, workers=1, show_progress=False)
    build = build_folder(small_faces, tmp_path / "build", "first:6", 128)
    script = (
        "import sys; from ffx.pipeline.stages.crop import run_crop; "
        "run_crop(sys.argv[1], workers=1, show_progress=False, flush_seconds=0)"
    )
    kill_mid_run(script, [str(build)], build, "faces", chunks=2, seconds=180)
    resumed = run_crop(build, workers=1, show_progress=False)
    assert resumed.skipped >= 2 and resumed.merged
    assert crops_digest(build) == crops_digest(reference)
    assert not list((build / "faces").glob(".*"))


def test_a_track_continues_through_dark_frames_and_the_screen_is_not_the_main_face(tmp_path: Path) -> None:
    """The subject is below 0.99 in 17 of 30 frames; a face on a screen behind is confident in all.
    By default (every bundled recipe's `track_min_prob` 0.7) the subject's dark frames continue its
    track (box_source `track`, their real probability) and it is the main face; with continuations
    off (`track_min_prob` = `min_prob`) the screen is."""
    root = tmp_path / "clips"
    root.mkdir()
    write_h264_video(root / "dusk.mp4", dusk_frames())
    build = build_folder(root, tmp_path / "build", "first:30", 128)
    run_crop(build, show_progress=False)
    subject = faces_by_key(build)["dusk"]
    assert [row["status"] for row in subject] == ["ok"] * 30
    assert all(row["x1"] >= 160 for row in subject)  # the subject
    continued = [row for row in subject if row["box_source"] == "track"]
    assert len(continued) >= 5 and all(0.7 <= row["prob"] < 0.99 for row in continued)
    assert all(row["prob"] >= 0.99 for row in subject if row["box_source"] == "detected")
    report = run_crop(build, track_min_prob=0.99, show_progress=False)
    assert report.redone == 1
    screen = faces_by_key(build)["dusk"]
    assert all(row["x1"] < 160 for row in screen if row["status"] == "ok")  # the screen, top left
