"""`ffx explain` on the demo's detector: its fakes are altered in a known region (the mouth), so the
attention maps can be checked against where the evidence really is; the t-SNE features."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from ffx.apply.explain import METHODS, explain, parse_methods
from ffx.demo import DEMO_FRAMES
from ffx.errors import FfxError
from ffx.synthetic import portrait_frames

CROP_SIZE, MODEL_CROP = 128, 112  # the demo recipe's crop size; the demo run's centre crop


def altered_region(key: str, frame_index: int, crop_box: tuple[int, int, int, int]) -> np.ndarray:
    """Where a demo fake differs from the same clip unaltered (same seed: same brightness), in the
    model's input: the frame's difference, cut and resized as the crop was, then centre-cropped."""
    number = int(key.rsplit("_", 1)[1])
    fake = list(portrait_frames(DEMO_FRAMES, phase=number * 0.9, fake=True, seed=1000 + number))[frame_index]
    real = list(portrait_frames(DEMO_FRAMES, phase=number * 0.9, fake=False, seed=1000 + number))[frame_index]
    changed = (np.abs(fake.astype(int) - real.astype(int)).sum(axis=2) > 12).astype(np.uint8)
    x1, y1, x2, y2 = crop_box
    resized = cv2.resize(changed[y1:y2, x1:x2], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_NEAREST)
    margin = (CROP_SIZE - MODEL_CROP) // 2
    return resized[margin : margin + MODEL_CROP, margin : margin + MODEL_CROP].astype(bool)


def test_attention_falls_on_the_altered_mouth_of_most_fakes(demo, tmp_path) -> None:
    workdir, _ = demo
    report = explain(
        workdir / "run/last.safetensors",
        tmp_path / "explain",
        shards=workdir / "build/shards",
        per_class=8,
        device="cpu",
        show_progress=False,
    )
    assert report.samples == 16 and {path.name for path in report.sheets} == {
        "sheet-real.png",
        "sheet-fake.png",
    }
    faces = {
        (row["key"], row["frame_index"]): (row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"])
        for row in pq.read_table(workdir / "build/faces.parquet").to_pylist()
    }
    fakes = [name for name in report.maps if name.startswith("fake__")]
    assert len(fakes) == 8 and len({name.rsplit("_", 1)[0] for name in fakes}) == 4  # 4 videos
    for number, method in enumerate(METHODS):
        inside_higher = 0
        for name in fakes:
            key, frame = name.rsplit("_", 1)
            region = altered_region(key, int(frame), faces[(key, int(frame))])
            heat = report.maps[name][number]
            assert heat.shape == region.shape and 0.05 < region.mean() < 0.5
            inside_higher += heat[region].mean() > 2 * heat[~region].mean()
        # Most fakes, for every method: twice the attention per pixel on the altered region.
        assert inside_higher >= 6, (method, inside_higher)
    for method in METHODS:
        assert len(list((tmp_path / "explain/cam" / method).glob("*.png"))) == 16
    sheet = cv2.imread(str(tmp_path / "explain/sheet-fake.png"))
    assert sheet.shape[0] > 8 * 100 and sheet.shape[1] > 6 * 100  # 8 rows of crop + 5 maps
    # The t-SNE: one row per sample of the test split (4 + 4 videos of 30 frames), a 2-D point each.
    features = pq.read_table(tmp_path / "explain/features.parquet").to_pylist()
    assert len(features) == 8 * 30 == len({row["sample"] for row in features})
    assert {row["label_name"] for row in features} == {"real", "fake"}
    assert all(
        len(row["feature"]) == 512 and np.isfinite([row["tsne_x"], row["tsne_y"]]).all() for row in features
    )
    assert (tmp_path / "explain/tsne.png").stat().st_size > 10_000


def test_the_demo_writes_a_grad_cam_sheet_per_class(demo) -> None:
    workdir, out = demo
    for name in ("sheet-real.png", "sheet-fake.png", "tsne.png", "features.parquet"):
        assert (workdir / "explain" / name).stat().st_size > 0, name
    assert str(workdir / "explain/sheet-fake.png") in out


def test_methods_are_checked() -> None:
    assert parse_methods("gradcam, LayerCAM,gradcam") == ("gradcam", "layercam")
    with pytest.raises(FfxError, match="unknown CAM method scorecam"):
        parse_methods("scorecam")
