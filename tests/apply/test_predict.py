"""`ffx predict`: the demo's detector applied to raw videos and images, scored as `ffx eval` scores
the same frames through shards; a row for every frame, with the reason where there is no score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ffx.apply.predict import predict
from tests.conftest import SHARED_MEDIA, run_cli

FRAMES = 30  # the demo recipe's sampling, first:30


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_predict_scores_frames_as_ffx_eval_does_through_shards(demo, tmp_path: Path) -> None:
    workdir, _ = demo
    build = workdir / "build"
    root = Path(json.loads((build / "index.json").read_text())["root"])
    test = [row for row in pq.read_table(build / "videos.parquet").to_pylist() if row["split"] == "test"]
    chosen = [row for label in ("real", "fake") for row in test if row["label_name"] == label][::3]
    assert {row["label_name"] for row in chosen} == {"real", "fake"}
    report = predict(
        workdir / "run/last.safetensors",
        [root / row["path"] for row in chosen],
        tmp_path / "out",
        device="cpu",
        show_progress=False,
    )
    key_of = {str(root / row["path"]): row["key"] for row in chosen}
    predicted = {(key_of[row["input"]], row["frame_index"]): row["score"] for row in report.frames}
    evaluated = {
        (row["video"], row["frame_index"]): row["score"]
        for row in pq.read_table(workdir / "eval-test/predictions.parquet").to_pylist()
        if row["video"] in key_of.values()
    }
    assert len(predicted) == len(chosen) * FRAMES and set(predicted) == set(evaluated)
    assert max(abs(predicted[frame] - evaluated[frame]) for frame in evaluated) < 1e-6
    for row in report.inputs:  # the video verdict is the mean of its frames' scores
        frames = [score for (key, _), score in predicted.items() if key == key_of[row["input"]]]
        assert row["score"] == pytest.approx(sum(frames) / len(frames), abs=1e-12)
        assert (row["frames"], row["faces"], row["status"]) == (FRAMES, FRAMES, "ok")


def test_the_demo_applies_its_detector_to_a_clip_and_an_image_without_a_face(demo) -> None:
    workdir, out = demo
    inputs = read_csv(workdir / "predict/inputs.csv")
    clip, image = inputs
    assert (clip["kind"], clip["status"], clip["frames"], clip["faces"]) == ("video", "ok", "30", "30")
    assert float(clip["score"]) >= 0.5 and clip["label"] == "fake"  # a held-out fake
    assert (image["kind"], image["status"], image["error"], image["score"]) == (
        "image",
        "no_face",
        "no face found",
        "",
    )
    frames = read_csv(workdir / "predict/frames.csv")
    assert len(frames) == FRAMES + 1
    assert [row["frame_index"] for row in frames[:FRAMES]] == [str(index) for index in range(FRAMES)]
    record = json.loads((workdir / "predict/predictions.json").read_text())
    assert record["settings"]["sampling"] == "first:30" and record["threshold"] == 0.5
    assert "ffx predict" in out and "│ no_face.png │ no_face │" in out and "no face found" in out


def test_unreadable_inputs_get_a_row_and_only_nothing_readable_fails(demo, tmp_path: Path) -> None:
    workdir, _ = demo
    checkpoint = str(workdir / "run/last.safetensors")
    broken = tmp_path / "inputs" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_text("not a video")
    no_face = workdir / "predict-inputs/no_face.png"
    code, out = run_cli(["predict", checkpoint, str(broken), str(no_face), "--out", str(tmp_path / "a")])
    assert code == 0, out
    rows = {Path(row["input"]).name: row for row in read_csv(tmp_path / "a/inputs.csv")}
    assert (
        rows["broken.mp4"]["status"] == "decode_error"
        and "not a readable video" in rows["broken.mp4"]["error"]
    )
    assert rows["no_face.png"]["status"] == "no_face"
    code, out = run_cli(["predict", checkpoint, str(broken), "--out", str(tmp_path / "b")])
    assert code == 1 and (tmp_path / "b/inputs.csv").is_file()
    code, out = run_cli(["predict", checkpoint, str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "c")])
    assert code == 1 and not (tmp_path / "c").exists()


@pytest.mark.skipif(not (SHARED_MEDIA / "videos").is_dir(), reason="../shared/media not present")
def test_real_clips_and_photos_get_a_row_per_frame(demo, tmp_path: Path) -> None:
    workdir, _ = demo
    report = predict(
        workdir / "run/last.safetensors",
        [SHARED_MEDIA / "videos", SHARED_MEDIA / "images"],
        tmp_path / "out",
        device="cpu",
        show_progress=False,
    )
    by_input = {Path(row["input"]).name: row for row in report.inputs}
    for name, row in by_input.items():
        if row["kind"] == "video":
            frames = {frame["frame_index"] for frame in report.frames if frame["input"] == row["input"]}
            assert frames == set(range(FRAMES)), name
    assert by_input["no_face_skimage_coffee.png"]["status"] == "no_face"
    assert (
        by_input["single_face_obama.jpg"]["status"] == "ok"
        and by_input["single_face_obama.jpg"]["faces"] == 1
    )
    assert by_input["liveportrait_d18.mp4"]["faces"] >= 28
    # A group photo: every face scored, a frames row each; the verdict is the main face's (track
    # 0), the others are listed beside it, none dropped.
    group = by_input["multi_face_insightface_t1.jpg"]
    faces = [frame for frame in report.frames if frame["input"] == group["input"]]
    assert group["tracks"] == len(faces) >= 4 and sorted(frame["track"] or 0 for frame in faces) == list(
        range(len(faces))
    )
    main = next(frame for frame in faces if not frame["track"])
    assert group["score"] == pytest.approx(main["score"]) and group["faces"] == 1
    assert group["other_faces"].count(" over 1 frames") == len(faces) - 1


def test_kept_crops_explain_links_cut_files_and_a_bad_out(demo, tmp_path: Path) -> None:
    workdir, _ = demo
    checkpoint = str(workdir / "run/last.safetensors")
    clip = sorted((workdir / "data/fake").glob("*.mp4"))[0]
    inputs = tmp_path / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    (inputs / "a/cut.mp4").write_bytes(clip.read_bytes()[:20_000])  # the first frames only
    (inputs / "a/gone.mp4").symlink_to(tmp_path / "nowhere.mp4")  # a dangling link
    for folder in ("a", "b"):
        (inputs / folder / "same.png").write_bytes((workdir / "predict-inputs/no_face.png").read_bytes())
    code, out = run_cli(
        ["predict", checkpoint, str(clip), str(inputs), "--out", str(tmp_path / "o"), "--explain"]
    )
    assert code == 0, out
    rows = {}
    for row in read_csv(tmp_path / "o/inputs.csv"):
        path = Path(row["input"])
        rows["clip" if path == clip else path.relative_to(tmp_path).as_posix()] = row
    assert rows["in/a/gone.mp4"]["status"] == "missing"
    assert rows["in/a/cut.mp4"]["status"] == "partial" and 0 < int(rows["in/a/cut.mp4"]["frames"]) < FRAMES
    assert rows["clip"]["status"] == "ok" and rows["clip"]["faces"] == str(FRAMES)
    assert len(list((tmp_path / "o/crops" / clip.stem).glob("*.png"))) == FRAMES  # a video's crops kept
    assert (tmp_path / f"o/sheet-{clip.stem}.png").stat().st_size > 0  # --explain: its Grad-CAM sheet
    assert "│ same.png " not in out and "│ cut.mp4 " in out  # a name that repeats is shown as its path
    # An --out that is a file is refused before any work, in one line.
    (tmp_path / "file").write_text("x")
    code, out = run_cli(["predict", checkpoint, str(clip), "--out", str(tmp_path / "file")])
    assert code == 1 and not (tmp_path / "file").is_dir()
