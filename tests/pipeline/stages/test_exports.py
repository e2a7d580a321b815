"""Issue 27: exports the downstream readers take exactly as they are written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from ffx.pipeline.stages.export import run_export
from tests.assertions import help_text
from tests.generated import make_cropped_build


def test_mcx_api_lists_every_split_an_empty_one_too(tmp_path: Path) -> None:
    """MCX-API's train.py opens train.txt and val.txt: each is written, one line per labelled
    crop of the split (counted here from the tables), empty where the split holds none, said."""
    build = make_cropped_build(tmp_path, videos_per_label=1, frames=2, side=16)
    split_of = {row["key"]: row["split"] for row in pq.read_table(build / "videos.parquet").to_pylist()}
    crops = Counter(
        split_of[row["key"]] for row in pq.read_table(build / "faces.parquet").to_pylist() if row["path"]
    )
    report = run_export(build, "mcx-api", tmp_path / "out")
    for split in ("train", "val", "test"):
        lines = (tmp_path / "out" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == crops[split], split
        assert all(
            line.rsplit(" ", 1)[1] in ("0", "1") and Path(line.rsplit(" ", 1)[0]).is_file() for line in lines
        )
        empty = f"{split}.txt is empty: the build's {split} split holds no labelled crop"
        assert (empty in report.notes) == (crops[split] == 0)
    assert 0 in [crops[split] for split in ("train", "val", "test")]  # the case this test is for


def test_an_animated_gif_is_a_video_and_skipped_files_are_counted(tmp_path: Path) -> None:
    """An animated GIF is indexed, decoded and cropped as a video (PyAV reads it); files that are
    no video by their extension are counted in the index's notes, by extension."""
    from PIL import Image

    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.build import run_build
    from ffx.synthetic import portrait_frames

    root = tmp_path / "clips"
    (root / "real").mkdir(parents=True)
    frames = [Image.fromarray(frame) for frame in portrait_frames(6, phase=0.3, fake=False)]
    frames[0].save(root / "real" / "clip.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    (root / "real" / "notes.txt").write_text("not a video")
    (root / "real" / "still.jpg").write_bytes(b"")
    build = tmp_path / "build"
    report = run_build(
        load_manifest("folder", {"sampling": "first:6", "crop.size": 96}), root, build, show_progress=False
    )
    index = report.index
    assert index.videos == 1 and any(
        "2 files left out" in note and ".txt 1" in note and ".jpg 1" in note for note in index.notes
    ), index.notes
    faces = [row for row in pq.read_table(build / "faces.parquet").to_pylist() if row["path"]]
    assert len(faces) == 6  # every frame decoded, a face in each


def test_export_help_lists_every_format() -> None:
    from ffx.pipeline.stages.export import FORMATS

    text = help_text("export")
    assert all(name in text for name in FORMATS), text


def test_a_folder_listed_twice_in_a_deepfakebench_json_is_refused_unless_val_and_test(tmp_path: Path) -> None:
    import json

    import pytest

    from ffx.errors import InputError
    from ffx.pipeline.recipe.layouts.crops import crop_videos
    from ffx.pipeline.recipe.manifest import CropsLayout

    for number in range(3):
        (tmp_path / "crops" / f"v{number}").mkdir(parents=True)
        (tmp_path / "crops" / f"v{number}" / "000.png").write_bytes(b"")

    def listed(entries: dict) -> CropsLayout:
        info = {
            "ds": {
                label: {
                    split: {name: {"label": label, "frames": [f"crops/{name}/000.png"]} for name in names}
                    for split, names in splits.items()
                }
                for label, splits in entries.items()
            }
        }
        (tmp_path / "ds.json").write_text(json.dumps(info))
        return CropsLayout(kind="crops", format="deepfakebench", json_file="ds.json")

    # DeepfakeBench's own Celeb-DF listing: test videos under val too, one label: kept as test.
    videos, _ = crop_videos(tmp_path, listed({"real": {"val": ["v0"], "test": ["v0"], "train": ["v1"]}}))
    assert (videos["crops/v0"]["split"], videos["crops/v1"]["split"]) == ("test", "train")
    with pytest.raises(
        InputError, match=r"ds.json: real/val/v0 and .*ds.json: real/train/v0 list the same folder"
    ):
        crop_videos(tmp_path, listed({"real": {"train": ["v0"], "val": ["v0"]}}))
    with pytest.raises(InputError, match=r"fake/train/v2 and .*real/train/v2 list the same folder crops/v2"):
        crop_videos(tmp_path, listed({"real": {"train": ["v2"]}, "fake": {"train": ["v2"]}}))
