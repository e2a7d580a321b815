"""Dense landmarks, convex-hull masks, aligned crops (`ffx crop --landmarks`, `--mask`, `--preset`)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ffx.cli import main
from ffx.errors import InputError
from ffx.pipeline.engine.identity import pixels_sha256
from ffx.pipeline.media import landmarks as lm
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.crop import CropStage, run_crop
from ffx.pipeline.stages.export import run_export
from ffx.pipeline.stages.shard import run_shard
from tests.assertions import faces_by_key
from tests.conftest import SHARED_MEDIA
from tests.generated import build_folder, portrait_clip

HAVE_DLIB = True
try:
    lm.model_file(lm.DLIB68)
except InputError:
    HAVE_DLIB = False
needs_dlib = pytest.mark.skipif(
    not HAVE_DLIB, reason="the landmarks extra (dlib-bin, face-recognition-models)"
)
needs_media = pytest.mark.skipif(not (SHARED_MEDIA / "videos").is_dir(), reason="../shared/media not present")


def frame_images(build: Path) -> dict[tuple[str, int], np.ndarray]:
    """The extracted full frames by (key, frame), checked against the hashes extract recorded."""
    images = {}
    for row in pq.read_table(build / "frames.parquet").to_pylist():
        rgb = cv2.cvtColor(cv2.imread(str(build / row["path"])), cv2.COLOR_BGR2RGB)
        assert pixels_sha256(rgb) == row["pixels_sha256"]
        images[(row["key"], row["frame_index"])] = rgb
    return images


def assert_matches_plain_dlib(build: Path) -> int:
    """Every stored landmark within 1 px of dlib run on the same full frame with the MTCNN box as
    the rectangle (rounded, right/bottom inclusive); returns how many faces were compared."""
    import dlib

    predictor = dlib.shape_predictor(str(lm.model_file(lm.DLIB68)))
    images = frame_images(build)
    compared = 0
    for rows in faces_by_key(build).values():
        for row in rows:
            if row["status"] != "ok":
                assert row["dense_landmarks"] is None
                continue
            rectangle = dlib.rectangle(
                round(row["x1"]),
                round(row["y1"]),
                round(row["x2"]) - 1,
                round(row["y2"]) - 1,
            )
            shape = predictor(images[(row["key"], row["frame_index"])], rectangle)
            expected = np.array([(point.x, point.y) for point in shape.parts()], np.float64)
            stored = np.asarray(row["dense_landmarks"], np.float64).reshape(-1, 2)
            assert stored.shape == (68, 2)
            assert np.abs(stored - expected).max() <= 1.0, row["path"]
            compared += 1
    return compared


def test_similarity_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = lm.ARCFACE_112 @ (scale * rotation).T + shift
    matrix = lm.similarity(points, lm.ARCFACE_112)
    inverse_rotation = rotation.T / scale
    np.testing.assert_allclose(matrix[:, :2], inverse_rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], -inverse_rotation @ shift, atol=1e-9)


def test_aligned_crop_puts_the_eyes_where_the_template_says() -> None:
    """Five dots at a rotated, scaled copy of the template: in a 224 crop they land on the
    template scaled by 2 (1 px), and the crop's frame box holds the face."""
    size = 224
    angle, scale, shift = -0.2, 3.0, np.array([150.0, 90.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = lm.ARCFACE_112 @ (scale * rotation).T + shift
    frame = np.zeros((720, 960, 3), np.uint8)
    for x, y in points:
        cv2.circle(frame, (round(x), round(y)), 6, (255, 255, 255), -1)
    matrix = lm.aligned_matrix(points, size)
    crop, cut = lm.aligned_crop(frame, matrix, size)
    assert crop.shape == (size, size, 3)
    count, _labels, _stats, centres = cv2.connectedComponentsWithStats((crop[:, :, 0] > 127).astype(np.uint8))
    assert count == 6  # background and five dots
    found = sorted(centres[1:].tolist())
    expected = sorted((lm.ARCFACE_112 * size / 112).tolist())
    assert np.abs(np.array(found) - np.array(expected)).max() <= 1.0
    x1, y1, x2, y2 = cut
    assert (
        x1 <= points[:, 0].min()
        and points[:, 0].max() < x2
        and y1 <= points[:, 1].min()
        and points[:, 1].max() < y2
    )
    # The crop side in the frame is size / scale of the similarity (about 3 * 112 here).
    assert abs((x2 - x1) - 112 * scale * (abs(np.cos(angle)) + abs(np.sin(angle)))) <= 2


def test_box_crop_points_follow_the_resize() -> None:
    """A blob at a fractional place in the frame, cut and resized as the box presets do (PIL
    bilinear): its centre in the crop is where `crop_points` says (0.3 px)."""
    yy, xx = np.mgrid[0:200, 0:300]
    centre = np.array([131.3, 77.6])
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 6.0**2))
    frame = np.repeat((blob * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)
    cut, size = (90, 40, 190, 160), 96  # not square: each axis has its own scale, as mcx-api
    crop = np.asarray(Image.fromarray(frame[40:160, 90:190]).resize((size, size), Image.BILINEAR))
    weights = crop[:, :, 0].astype(np.float64)
    cy, cx = np.mgrid[0:size, 0:size]
    found = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
    assert np.abs(lm.crop_points(centre, cut, size)[0] - found).max() <= 0.3


def test_hull_mask_fills_the_hull_only() -> None:
    mask = lm.hull_mask([[10, 10], [50, 12], [30, 40], [30, 20]], 64)  # (30, 20) lies inside
    assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    assert mask[20, 30] == 255 and mask[11, 12] == 255 and mask[5, 5] == 0 and mask[45, 30] == 0
    reference = np.zeros((64, 64), np.uint8)
    cv2.fillPoly(reference, [np.array([[10, 10], [50, 12], [30, 40]], np.int32)], 255)
    assert np.array_equal(mask, reference)


def test_default_settings_leave_the_crop_digest_alone() -> None:
    """The landmark fields at their defaults are not in the crops' settings: builds made before
    them stay current; set, they are."""
    recipe = load_manifest("folder")
    settings = CropStage.settings(recipe)
    assert "landmarks" not in settings and "mask" not in settings and settings["preset"] == "mcx-api"
    if HAVE_DLIB:
        with_landmarks = load_manifest("folder", {"crop.landmarks": "dlib68", "crop.mask": True})
        assert CropStage.settings(with_landmarks) == settings | {"landmarks": "dlib68", "mask": True}


def test_a_mask_needs_landmarks_and_a_missing_model_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(Exception, match=r"set crop\.landmarks too"):
        load_manifest("folder", {"crop.mask": True})
    portrait_clip(tmp_path / "clips" / "a.mp4", 2, 0.0)
    build = build_folder(tmp_path / "clips", tmp_path / "build", "first:2", 64)
    missing = tmp_path / "shape_predictor_81_face_landmarks.dat"
    assert main(["crop", str(build), "--landmarks-model", str(missing)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(missing) in error and "not found" in error


def test_without_the_extra_asking_for_landmarks_says_what_to_install(monkeypatch) -> None:
    real = lm.importlib.util.find_spec
    monkeypatch.setattr(lm.importlib.util, "find_spec", lambda name: None if name == "dlib" else real(name))
    with pytest.raises(InputError, match=r"pip install 'ffx\[landmarks\]'"):
        lm.model_file(lm.DLIB68)


@needs_dlib
def test_portrait_landmarks_masks_and_samples(tmp_path: Path) -> None:
    """Bundled portrait clips (no media): landmarks equal dlib's on the full frames, the mask is
    the hull of the landmarks in crop pixels, and the samples carry both."""
    root = tmp_path / "clips"
    for number in range(2):
        portrait_clip(root / f"clip_{number}.mp4", 4, phase=number * 1.3)
    size = 160
    build = build_folder(root, tmp_path / "build", "first:4", size)
    run_crop(build, workers=1, show_progress=False, landmarks="dlib68", mask=True)
    assert assert_matches_plain_dlib(build) == 8
    for rows in faces_by_key(build).values():
        for row in rows:
            mask = cv2.imread(str(build / row["mask_path"]), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (size, size) and row["mask_path"] == row["path"].replace(".png", ".mask.png")
            # The hull, mapped by hand: crop box resized to size x size, pixel centres kept.
            x1, y1, x2, y2 = row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]
            points = np.asarray(row["dense_landmarks"]).reshape(-1, 2)
            mapped = np.stack(
                [
                    (points[:, 0] - x1 + 0.5) * size / (x2 - x1) - 0.5,
                    (points[:, 1] - y1 + 0.5) * size / (y2 - y1) - 0.5,
                ],
                axis=1,
            )
            assert (mapped >= 0).all() and (mapped < size).all()  # the face lies inside the crop
            reference = np.zeros((size, size), np.uint8)
            cv2.fillConvexPoly(reference, cv2.convexHull(np.round(mapped).astype(np.int32)), 255)
            # Equal but where a point sits on a rounding tie (the two mappings differ by 1e-14).
            assert (mask != reference).sum() <= 0.02 * (reference > 0).sum()
            assert 0.15 < (mask > 0).mean() < 0.9
    rows = [row for rows in faces_by_key(build).values() for row in rows]
    run_shard(build, workers=1, show_progress=False)  # the integer crop window only, by default
    members = shard_members(build)
    for row in rows:
        metadata = json.loads(members[f"{row['key']}_{row['frame_index']:04d}.json"])
        assert metadata["crop_box"] == [row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]]
        assert not {"box", "prob", "dense_landmarks", "crop_landmarks"} & set(metadata)
    run_shard(build, workers=1, show_progress=False, detector_outputs=True)  # on request
    members = shard_members(build)
    for row in rows:
        name = f"{row['key']}_{row['frame_index']:04d}"
        metadata = json.loads(members[f"{name}.json"])
        assert metadata["dense_landmarks"] == row["dense_landmarks"]
        expected = lm.face_crop_landmarks(row, size).reshape(-1)
        assert np.abs(np.array(metadata["crop_landmarks"]) - expected).max() <= 1e-3
        assert members[f"{name}.mask.png"] == (build / row["mask_path"]).read_bytes()
        assert "crop_matrix" not in metadata
    # The shards' card names every member a sample holds, the mask and the detector's floats too.
    card = (build / "shards" / "README.md").read_text()
    assert all(f"`{name.split('.', 1)[1]}`" in card for name in members), card
    assert "`mask.png`: the face mask" in card and "box, prob, landmarks" in card
    # Turning them off again is a change of the recipe: the crops are redone without them.
    report = run_crop(build, workers=1, show_progress=False, landmarks="none", mask=False)
    assert report.redone == 2
    assert all(
        row["dense_landmarks"] is None and row["mask_path"] == "" for row in faces_by_key(build)["clip_0"]
    )
    assert not list(build.glob("faces/*/*.mask.png"))


def test_lib_lists_folders_of_face_crops_only_when_masks_lie_beside_them(tmp_path: Path) -> None:
    """LIB's reader takes every PNG of a listed folder for a face: `*.mask.png` must not be there."""
    root = tmp_path / "clips"
    for number, label in enumerate(("real", "fake")):
        portrait_clip(root / label / f"clip_{number}.mp4", 3, phase=number * 1.3)
    build = build_folder(root, tmp_path / "build", "first:3", 96)
    run_crop(build, workers=1, show_progress=False, landmarks="dlib68", mask=True)
    run_export(build, "lib", tmp_path / "lib")
    lists = (tmp_path / "lib").rglob("*.txt")
    listed = [line.split(",") for path in lists for line in path.read_text().splitlines()]
    assert sum(int(count) for _, _, count in listed) == 6  # 2 clips x 3 frames, one face each
    for _, folder, count in listed:
        pngs = list(Path(folder).glob("*.png"))
        assert len(pngs) == int(count) and not [path for path in pngs if path.name.endswith(".mask.png")]


@pytest.mark.parametrize("size", [112, 192])
def test_aligned_portrait_crops(tmp_path: Path, size: int) -> None:
    """The aligned preset on the portrait clips: crops of `size`, the five points mapped by
    `crop_matrix` onto the template, and the crop's pixels are the frame warped by that matrix."""
    portrait_clip(tmp_path / "clips" / "a.mp4", 3, 0.4)
    build = build_folder(tmp_path / "clips", tmp_path / "build", "first:3", size)
    run_crop(build, workers=1, show_progress=False, preset="aligned")
    images = frame_images(build)
    for row in faces_by_key(build)["a"]:
        matrix = np.asarray(row["crop_matrix"]).reshape(2, 3)
        five = np.asarray(row["landmarks"]).reshape(5, 2) @ matrix[:, :2].T + matrix[:, 2]
        template = lm.ARCFACE_112 * size / 112
        # The eyes: a similarity fits five points in the least-squares sense, so they sit off the
        # template by the face's own proportions (across, under 0.5 px; down, 2-2.6 px at 112 for
        # this portrait); the exact placement is checked on a similarity of the template, above.
        offset = np.abs(five[:2] - template[:2]) * 112 / size
        assert offset[:, 0].max() <= 1 and offset[:, 1].max() <= 3
        crop = cv2.cvtColor(cv2.imread(str(build / row["path"])), cv2.COLOR_BGR2RGB)
        frame = images[("a", row["frame_index"])]
        assert np.array_equal(crop, cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR))
        x1, y1, x2, y2 = row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]
        assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
        assert x1 <= row["x1"] and row["x2"] <= x2 + 2


@needs_dlib
@needs_media
def test_media_landmarks_match_dlib_on_the_full_frames(tmp_path: Path) -> None:
    """The real clips (several resolutions, faces off centre): stored landmarks within 1 px of dlib
    run directly on the same full frames with the same rectangle."""
    root = tmp_path / "clips"
    root.mkdir()
    for video in sorted((SHARED_MEDIA / "videos").glob("*.mp4")):
        shutil.copy(video, root / video.name)
    build = build_folder(root, tmp_path / "build", "first:3", 224)
    run_crop(build, show_progress=False, landmarks="dlib68", preset="square-1.3")
    assert assert_matches_plain_dlib(build) >= 10


def test_mask_png_reads_back_as_one_channel() -> None:
    """The mask is a one-channel PNG (what DeepfakeBench and SBI read with cv2.IMREAD_GRAYSCALE)."""
    from ffx.pipeline.media.images import encode_png

    mask = lm.hull_mask([[2, 2], [20, 3], [12, 25]], 32)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(mask, 1))))
    assert decoded.ndim == 2 and np.array_equal(decoded, mask)


def shard_members(build: Path) -> dict[str, bytes]:
    """Every member of the build's shards, by name."""
    members = {}
    for shard in sorted((build / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members |= {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    return members
