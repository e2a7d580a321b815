"""`ffx shard` and `ffx verify` on a generated build (videos.parquet, faces.parquet, crop PNGs).

The build is made without decoding or detecting: the tables are the contract between stages,
so generated tables and crops exercise the shard stage exactly as real ones would.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ffx.cli import main
from ffx.errors import BuildError
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.media.color import SPACES, convert
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.stages.verify import verify_shards
from tests.conftest import REPO, touch
from tests.generated import CROP_SIDE, crop_pixels, make_cropped_build

FRAMES = 5


@pytest.fixture
def cropped_build(tmp_path: Path) -> Path:
    """Eight real and eight fake videos with five crops each; `fake/none` has no face at all."""
    return make_cropped_build(tmp_path, videos_per_label=8, frames=FRAMES)


SETTINGS = {"max_count": 7, "seed": 3}


def shard_digests(build: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((build / "shards").glob("*.tar"))
    }


def read_samples(shard: Path) -> dict[str, dict[str, bytes]]:
    """Members of a shard grouped by sample key, in file order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            samples.setdefault(key, {})[extension] = archive.extractfile(member).read()
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
    return samples


def test_every_crop_becomes_one_sample_with_every_space(cropped_build: Path) -> None:
    report = run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    assert report.merged and report.rows_by_status == {"ok": 16 * FRAMES, "no_face": 1}
    assert report.failed == [("fake__none", "no_face", "no face found")]
    videos = {row["key"]: row for row in pq.read_table(cropped_build / "videos.parquet").to_pylist()}
    index = json.loads((cropped_build / "shards" / "index.json").read_text())
    seen: dict[str, str] = {}
    for entry in index["shards"]:
        shard = cropped_build / "shards" / entry["name"]
        samples = read_samples(shard)
        assert entry["name"].startswith(entry["split"] + "-") and len(samples) == entry["samples"] <= 7
        assert entry["bytes"] == shard.stat().st_size
        videos_in_split = sum(1 for video in videos.values() if video["split"] == entry["split"])
        if videos_in_split > 1 and entry["samples"] > FRAMES:  # videos are mixed
            assert len({sample.rsplit("_", 1)[0] for sample in samples}) > 1
        for sample, members in samples.items():
            assert list(members) == ["cls", "json", *(f"{space}.png" for space in SPACES)]
            meta = json.loads(members["json"])
            video = videos[meta["video"]]
            assert sample == f"{meta['video']}_{meta['frame_index']:04d}" and "." not in sample
            assert int(members["cls"]) == meta["label"] == video["label"]
            assert meta["split"] == video["split"] == entry["split"] and meta["source"] == video["path"]
            assert "box" not in meta and "prob" not in meta  # the detector's floats: on request only
            assert meta["crop_box"] == [
                0,
                0,
                CROP_SIDE,
                CROP_SIDE,
            ]
            crop = cropped_build / f"faces/{meta['video']}/{meta['frame_index']:06d}.png"
            assert members["rgb.png"] == crop.read_bytes()  # the crop itself, not re-encoded
            rgb = crop_pixels(meta["video"], meta["frame_index"])
            for space in SPACES:
                decoded = cv2.imdecode(np.frombuffer(members[f"{space}.png"], np.uint8), cv2.IMREAD_COLOR)
                assert np.array_equal(decoded[..., ::-1], convert(rgb, space)), space
            seen[sample] = entry["split"]
    assert len(seen) == 16 * FRAMES
    assert sum(split["samples"] for split in index["splits"].values()) == 16 * FRAMES
    labels = Counter(str(videos[sample.rsplit("_", 1)[0]]["label"]) for sample in seen)
    assert (
        Counter() + sum((Counter(split["labels"]) for split in index["splits"].values()), Counter()) == labels
    )


def test_same_shards_from_two_builds_and_from_two_parts(cropped_build: Path, tmp_path: Path) -> None:
    again, parts = tmp_path / "again", tmp_path / "parts"
    shutil.copytree(cropped_build, again)
    shutil.copytree(cropped_build, parts)
    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    run_shard(again, **SETTINGS, workers=1, show_progress=False)
    first = run_shard(parts, **SETTINGS, part=Part(0, 2), workers=1, show_progress=False)
    assert not first.merged and not (parts / "shards").exists()
    second = run_shard(parts, **SETTINGS, part=Part(1, 2), workers=1, show_progress=False)
    assert second.merged
    expected = shard_digests(cropped_build)
    assert len(expected) >= 4 and shard_digests(again) == expected == shard_digests(parts)
    index = json.loads((cropped_build / "shards" / "index.json").read_text())
    assert {entry["name"]: entry["sha256"] for entry in index["shards"]} == expected
    assert (parts / "shards" / "index.json").read_bytes() == (
        cropped_build / "shards" / "index.json"
    ).read_bytes()


def test_byte_limit_cuts_shards_and_a_new_layout_replaces_the_old(cropped_build: Path) -> None:
    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    sample_bytes = max(entry["bytes"] / entry["samples"] for entry in _index(cropped_build)["shards"])
    limit = int(sample_bytes * 3.5)
    small = {"max_count": 100, "max_bytes": limit, "seed": 3}
    report = run_shard(cropped_build, **small, workers=2, show_progress=False)
    shards = report.extra["index"]["shards"]
    assert report.skipped == 17 and report.counts["shards written"] == len(shards)  # samples reused
    assert all(entry["bytes"] <= limit for entry in shards)
    assert sorted(path.name for path in (cropped_build / "shards").glob("*.tar")) == sorted(
        entry["name"] for entry in shards
    )
    assert sum(entry["samples"] for entry in shards) == 16 * FRAMES


def test_an_interrupted_layout_finishes_with_the_same_bytes(cropped_build: Path) -> None:
    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    expected = shard_digests(cropped_build)
    shards = cropped_build / "shards"
    victim = sorted(shards.glob("*.tar"))[1]
    half = victim.read_bytes()[: victim.stat().st_size // 2]
    victim.unlink()
    (shards / f".{victim.name}.crash.tmp").write_bytes(half)  # what a kill -9 mid-write leaves
    (shards / "index.json").unlink()
    report = run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    assert report.counts["shards written"] == 1 and shard_digests(cropped_build) == expected
    assert not list(shards.glob(".*.tmp"))  # the half-written temp file is gone
    assert verify_shards(cropped_build).problems == []


def test_verify_names_truncated_altered_and_unlisted_shards(cropped_build: Path, capsys) -> None:
    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    assert main(["verify", str(cropped_build)]) == 0
    assert "all match the index" in capsys.readouterr().out
    first, second = sorted((cropped_build / "shards").glob("*.tar"))[:2]
    first.write_bytes(first.read_bytes()[:-2048])
    data = bytearray(second.read_bytes())
    data[700] ^= 0xFF
    second.write_bytes(bytes(data))
    shutil.copy(second, cropped_build / "shards" / "extra-000000.tar")
    assert main(["verify", str(cropped_build)]) == 1
    out = capsys.readouterr().out
    assert f"{first.name}: altered or truncated" in out and f"{second.name}: altered or truncated" in out
    assert "extra-000000.tar: not in index.json" in out


def test_webdataset_reads_the_shards_as_samples(cropped_build: Path) -> None:
    import webdataset as wds

    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    urls = [str(path) for path in sorted((cropped_build / "shards").glob("train-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == _index(cropped_build)["splits"]["train"]["samples"]
    assert all(
        {"cls", "json", "rgb.png", "lab.png", "hsv.png", "ycbcr.png"} <= set(sample) for sample in samples
    )
    assert all("." not in sample["__key__"] for sample in samples)
    assert io.BytesIO(samples[0]["rgb.png"]).read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_faces_table_is_a_clear_error(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    touch(root, "real/a.mp4")
    run_index(load_manifest("folder"), root, tmp_path / "build")
    assert main(["shard", str(tmp_path / "build")]) == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'build' / 'frames.parquet'} not found: run `ffx extract" in error
    assert len(error.strip().splitlines()) == 1


def _index(build: Path) -> dict:
    return json.loads((build / "shards" / "index.json").read_text())


# ---------------------------------------------------------------- reading back (ffx.data)


def expected_planes(meta: dict, spaces: tuple[str, ...]) -> np.ndarray:
    rgb = crop_pixels(meta["video"], meta["frame_index"])
    return np.concatenate([convert(rgb, space) for space in spaces], axis=2).transpose(2, 0, 1)


def test_loader_decodes_the_asked_spaces_in_order(cropped_build: Path) -> None:
    from ffx.data import open_shards, shard_dataset

    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    spaces = ("ycbcr", "rgb")
    samples = list(shard_dataset(cropped_build / "shards", "train", spaces=spaces))
    assert len(samples) == open_shards(cropped_build / "shards", "train").samples > 0
    for sample in samples:
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (6, CROP_SIDE, CROP_SIDE)
        assert np.array_equal(sample["image"].numpy(), expected_planes(sample["meta"], spaces))
        assert sample["label"] == sample["meta"]["label"] and sample["key"].startswith(
            sample["meta"]["video"]
        )
    centre = next(iter(shard_dataset(cropped_build / "shards", "train", spaces=("lab",), crop=32)))
    assert np.array_equal(centre["image"].numpy(), expected_planes(centre["meta"], ("lab",))[:, 8:40, 8:40])


def test_training_stream_crops_at_random_with_one_window_for_all_spaces(cropped_build: Path) -> None:
    from ffx.data import shard_dataset

    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)

    def stream():
        return shard_dataset(
            cropped_build / "shards", "train", spaces=("rgb", "hsv"), crop=40, train=True, seed=5
        )

    training = stream()
    first, second = [s["key"] for s in training], [s["key"] for s in training]
    assert first != second and sorted(first) == sorted(second)  # each epoch in a new order
    assert [s["key"] for s in stream()] == first  # the same seed gives the same order
    assert first != sorted(first)
    offsets = set()
    for sample in stream():
        full = expected_planes(sample["meta"], ("rgb", "hsv"))
        matches = [
            (top, left)
            for top in range(CROP_SIDE - 40 + 1)
            for left in range(CROP_SIDE - 40 + 1)
            if np.array_equal(full[:, top : top + 40, left : left + 40], sample["image"].numpy())
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_loader_workers_see_every_sample_once_in_uint8_batches(cropped_build: Path) -> None:
    from ffx.data import open_shards, shard_dataset, shard_loader

    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    shard_set = open_shards(cropped_build / "shards", "train")
    assert len(shard_set.urls) >= 2 and sum(shard_set.labels.values()) == shard_set.samples
    batches = list(shard_loader(shard_dataset(cropped_build / "shards", "train", spaces="rgb"), 4, workers=2))
    keys = [key for batch in batches for key in batch["key"]]
    assert len(keys) == len(set(keys)) == shard_set.samples
    assert all(
        batch["image"].dtype == torch.uint8 and batch["label"].dtype == torch.int64 for batch in batches
    )


def test_loader_errors_name_the_problem(cropped_build: Path) -> None:
    from ffx.data import open_shards, shard_dataset

    run_shard(cropped_build, spaces=["rgb"], max_count=7, workers=2, show_progress=False)
    with pytest.raises(BuildError, match="colour spaces lab are not in the shards"):
        shard_dataset(cropped_build / "shards", "train", spaces="rgb,lab")
    with pytest.raises(BuildError, match="no 'holdout' shards"):
        open_shards(cropped_build / "shards", "holdout")
    with pytest.raises(BuildError, match="no shards match"):
        open_shards(cropped_build / "nowhere-*.tar", "train")


def test_build_record_names_recipe_versions_inputs_and_shards(cropped_build: Path) -> None:
    from ffx.pipeline.stages.record import input_fingerprint, write_build_record

    run_shard(cropped_build, **SETTINGS, workers=2, show_progress=False)
    write_build_record(cropped_build)
    record = json.loads((cropped_build / "build.json").read_text())
    assert record["manifest_sha256"] == load_manifest(cropped_build / "manifest.toml").digest()
    assert record["shards"] == {entry["name"]: entry["sha256"] for entry in _index(cropped_build)["shards"]}
    assert record["stages"]["samples"]["rows"] == {"ok": 16 * FRAMES, "no_face": 1}
    assert record["libraries"]["webdataset"] != "absent" and record["inputs"]["files"] == 17
    lock = REPO / "requirements.lock"
    assert record["requirements_lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert [machine["cpu_kernels"] for machine in record["made_on"]["samples"]] in (
        ["avx512"],
        ["avx2"],
        ["default"],
    )
    fast, strict = input_fingerprint(cropped_build), input_fingerprint(cropped_build, strict=True)
    assert (fast["mode"], strict["mode"]) == ("size+mtime", "sha256") and fast["digest"] != strict["digest"]
    root = Path(json.loads((cropped_build / "index.json").read_text())["root"])
    (root / "real" / "clip0.mp4").write_bytes(b"changed")
    assert input_fingerprint(cropped_build, strict=True)["digest"] != strict["digest"]
    (root / "real" / "clip1.mp4").unlink()
    assert input_fingerprint(cropped_build)["missing"] == 1


# ---------------------------------------------------------------- export


def test_exports_list_every_labelled_crop_for_other_code(cropped_build: Path, tmp_path: Path) -> None:
    videos = {row["key"]: row for row in pq.read_table(cropped_build / "videos.parquet").to_pylist()}
    crops_per_split = Counter(videos[key]["split"] for key in videos if key != "fake__none")
    out = tmp_path / "exports"
    assert main(["export", str(cropped_build), "--format", "mcx-api", "--out", str(out / "mcx")]) == 0
    for split, count in crops_per_split.items():
        lines = (out / "mcx" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == count * FRAMES
        for line in lines:
            path, label = line.rsplit(" ", 1)
            key = Path(path).parent.name
            assert (
                Path(path).is_file() and int(label) == videos[key]["label"] and videos[key]["split"] == split
            )
    assert main(["export", str(cropped_build), "--format", "lib", "--out", str(out / "lib")]) == 0
    lists = sorted((out / "lib").glob("*/*.txt"))  # LIB's six lists per dataset, empty ones too
    assert sorted(path.name for path in lists) == sorted(
        f"{split}_{kind}.txt" for split in ("train", "val", "test") for kind in ("real", "fake")
    )
    listed: Counter[str] = Counter()
    for path in lists:
        split, kind = path.stem.split("_")
        for label, folder, frames in (line.split(",") for line in path.read_text().splitlines()):
            assert int(frames) == FRAMES == len(list(Path(folder).glob("*.png")))
            assert int(label) == videos[Path(folder).name]["label"] == (kind == "fake")
            assert videos[Path(folder).name]["split"] == split
            listed[split] += 1
    assert listed == crops_per_split
    assert main(["export", str(cropped_build), "--format", "imagefolder", "--out", str(out / "images")]) == 0
    linked = sorted((out / "images").glob("*/*/*.png"))
    assert len(linked) == 16 * FRAMES and all(path.is_symlink() for path in linked)
    for path in linked:
        split, label_name = path.parent.parent.name, path.parent.name
        key = path.stem.rsplit("_", 1)[0]
        assert (videos[key]["split"], videos[key]["label_name"]) == (split, label_name)
        assert (
            path.read_bytes()
            == (cropped_build / "faces" / key / f"{int(path.stem[-4:]):06d}.png").read_bytes()
        )
    assert main(["export", str(cropped_build), "--format", "coco", "--out", str(out / "x")]) != 0
