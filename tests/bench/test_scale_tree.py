"""Issue 23's scale generator (bench/common/trees.py, made by bench/scale_tree.py): its FF++ and DFDC
trees are what the recipes index, every video a hard link to one of at least 64 distinct clips, and
every video decodes to a frame with a face that ffx crops."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.common.trees import CLIPS, FFPP_METHODS, make_dfdc, make_ffpp
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.index import run_index


def indexed(recipe: str, root: Path, build: Path, splits: Path | None = None) -> list[dict]:
    """The rows `ffx index RECIPE` writes for the tree under `root`."""
    report = run_index(load_manifest(recipe), root, build, splits)
    rows = pq.read_table(report.table_path).to_pylist()
    assert report.videos == len(rows)
    return rows


def video_files(root: Path) -> list[Path]:
    """Every .mp4 of the tree outside its clip folder."""
    return [path for path in root.rglob("*.mp4") if CLIPS not in path.parts]


def test_an_ffpp_tree_is_what_ffpp_c23_indexes(tmp_path: Path) -> None:
    tree = make_ffpp(tmp_path / "ffpp", 40)
    assert tree.videos == 40 and tree.counts == {"pristine": 8, **{method: 8 for method in FFPP_METHODS}}
    rows = indexed("ffpp-c23", tree.root, tmp_path / "build", tree.splits)
    assert len(rows) == 40
    assert Counter(row["label_name"] for row in rows) == tree.counts
    assert Counter(row["label"] for row in rows) == {label: 8 for label in range(5)}
    by_key = {row["key"]: row for row in rows}
    for row in rows:
        if row["method"] == "original":
            continue
        target, _source = Path(row["path"]).stem.split("_")
        original = by_key[row["original_key"]]  # every fake names its original, which is indexed
        assert original["path"] == f"original_sequences/youtube/c23/videos/{target}.mp4"
        assert original["group"] == row["group"] == by_key[row["original_key"]]["group"]
        assert row["split"] == original["split"]
    official = json.loads((tree.splits / "test.json").read_text())
    assert official == [["006", "007"]]
    assert {row["split"] for row in rows if row["path"].endswith(("/006.mp4", "/007_006.mp4"))} == {"test"}
    assert Counter(row["split"] for row in rows) == {"train": 20, "val": 10, "test": 10}
    # Fewer videos than distinct clips: every video its own clip, each a hard link (clip + video).
    videos = video_files(tree.root)
    assert len(videos) == 40 and tree.distinct == 40
    assert len({path.stat().st_ino for path in videos}) == 40
    assert all(path.stat().st_nlink == 2 for path in videos)


def test_a_dfdc_tree_is_what_dfdc_indexes(tmp_path: Path) -> None:
    tree = make_dfdc(tmp_path / "dfdc", 40, per_part=20)
    assert tree.parts == 2 and tree.counts == {"real": 8, "fake": 32}
    rows = indexed("dfdc", tree.root, tmp_path / "build")
    assert len(rows) == 40
    assert Counter(row["label_name"] for row in rows) == {"real": 8, "fake": 32}
    assert Counter(row["path"].split("/")[0] for row in rows) == {
        "dfdc_train_part_0": 20,
        "dfdc_train_part_1": 20,
    }
    by_key = {row["key"]: row for row in rows}
    fakes = [row for row in rows if row["label_name"] == "fake"]
    for row in fakes:
        original = by_key[row["original_key"]]
        assert original["label_name"] == "real" and original["group"] == row["group"]
        assert original["path"].split("/")[0] == row["path"].split("/")[0]  # in its own part
    assert sorted(Counter(row["original_key"] for row in fakes).values()) == [4] * 8  # 4 or 5 each
    assert len({row["group"] for row in rows}) == 8
    assert len({path.stat().st_ino for path in video_files(tree.root)}) == 40


@pytest.mark.parametrize("shape", ["ffpp", "dfdc"])
def test_a_large_tree_is_hard_links_to_at_least_64_distinct_clips(tmp_path: Path, shape: str) -> None:
    make = make_ffpp if shape == "ffpp" else make_dfdc
    tree = make(tmp_path / shape, 300)
    videos = video_files(tree.root)
    assert tree.videos == len(videos) == 300
    clips = sorted((tree.root / CLIPS).iterdir())
    assert 64 <= len(clips) == tree.distinct <= 66
    assert len({hashlib.sha256(clip.read_bytes()).digest() for clip in clips}) == len(clips)
    links = Counter(path.stat().st_ino for path in videos)
    assert set(links) == {clip.stat().st_ino for clip in clips}  # every video is one of the clips
    assert max(links.values()) >= 300 // len(clips)  # repeats are one inode
    for clip in clips:  # and each clip's link count is its videos plus itself
        assert clip.stat().st_nlink == links[clip.stat().st_ino] + 1 >= 2
    assert sum(clip.stat().st_size for clip in clips) < 2_000_000
    if shape == "ffpp":
        rows = indexed("ffpp-c23", tree.root, tmp_path / "build", tree.splits)
        assert Counter(row["label_name"] for row in rows) == {"pristine": 60} | {m: 60 for m in FFPP_METHODS}
    else:
        rows = indexed("dfdc", tree.root, tmp_path / "build")
        assert Counter(row["label_name"] for row in rows) == {"real": 50, "fake": 250}
        assert all(row["original_key"] for row in rows if row["label_name"] == "fake")


def test_a_remade_tree_is_the_same_files(tmp_path: Path) -> None:
    first = make_ffpp(tmp_path / "ffpp", 20)
    inodes = {path: path.stat().st_ino for path in video_files(first.root)}
    again = make_ffpp(tmp_path / "ffpp", 20)
    assert again == first
    assert {path: path.stat().st_ino for path in video_files(again.root)} == inodes
    assert all(os.stat(path).st_nlink == 2 for path in inodes)


@pytest.mark.parametrize(("shape", "recipe", "videos"), [("ffpp", "ffpp-c23", 10), ("dfdc", "dfdc", 12)])
def test_every_video_of_a_small_tree_gets_a_face_crop(
    tmp_path: Path, shape: str, recipe: str, videos: int
) -> None:
    tree = (
        make_ffpp(tmp_path / "tree", videos)
        if shape == "ffpp"
        else make_dfdc(tmp_path / "tree", videos, per_part=6)
    )
    build = tmp_path / "build"
    report = run_build(
        load_manifest(recipe, {"sampling": "first:1"}),
        tree.root,
        build,
        splits_dir=tree.splits,
        workers=2,
        device="cpu",
        show_progress=False,
    )
    assert not report.waiting
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    assert len(faces) == videos and {row["status"] for row in faces} == {"ok"}
    assert all(row["prob"] >= 0.99 for row in faces)
    sources = Counter(row["box_source"] for row in faces)  # fakes take their original's boxes
    assert sources == {
        "detected": tree.counts.get("pristine", tree.counts.get("real")),
        "original": videos - sources["detected"],
    }
    assert all((build / row["path"]).is_file() for row in faces)
    index = json.loads((build / "shards" / "index.json").read_text())
    assert sum(shard["samples"] for shard in index["shards"]) == videos
