"""Interop with other tools: DeepfakeBench's JSON out and in, its sampling, LIB's six lists, crops
imported without video, and the wids index and dataset card beside the shards."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from ffx.cli import main
from ffx.errors import BuildError
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.identity import pixels_sha256
from ffx.pipeline.engine.lock import hold_lock
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.sampling import parse_sampling, spread_indices
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.export import run_export
from ffx.pipeline.stages.export_dfb import FFPP_FAMILY
from ffx.pipeline.stages.import_crops import run_import
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.loaders import front_matter
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.stages.status import build_status
from ffx.pipeline.stages.verify import verify_shards
from tests.conftest import touch
from tests.generated import FACELESS_KEY, crop_pixels, face_row, frame_row, write_stamped

FRAMES = 5


def rows(build: Path, table: str) -> list[dict]:
    return pq.read_table(build / f"{table}.parquet").to_pylist()


def crop_build_from_index(build: Path, frames: int = FRAMES, side: int = 32) -> Path:
    """Frames and crops for every indexed video (none for FACELESS_KEY), each row stamped as the
    stage would."""
    keys = [row["key"] for row in rows(build, "videos")]
    write_stamped(build, "frames", [frame_row(key, frame, side) for key in keys for frame in range(frames)])
    faces = []
    for key in keys:
        if key == FACELESS_KEY:
            faces += [face_row(key, frame, "", side) | {"mask_path": ""} for frame in range(frames)]
            continue
        for frame in range(frames):
            path = f"faces/{key}/{frame:06d}.png"
            (build / path).parent.mkdir(parents=True, exist_ok=True)
            (build / path).write_bytes(encode_png(crop_pixels(key, frame, side), 1))
            faces.append(face_row(key, frame, path, side) | {"mask_path": ""})
    write_stamped(build, "faces", faces)
    return build


def folder_build(tmp_path: Path, per_label: int) -> Path:
    """A `folder` build: `per_label` real and fake videos with FRAMES crops, and a faceless one."""
    root = tmp_path / "data"
    for label in ("real", "fake"):
        for number in range(per_label):
            touch(root, f"{label}/clip{number}.mp4")
    touch(root, "fake/none.mp4")
    run_index(load_manifest("folder"), root, tmp_path / "build")
    return crop_build_from_index(tmp_path / "build")


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("total", [120, 300, 397])
def test_dfb_linspace_truncates_where_linspace_rounds(total: int) -> None:
    rounded = spread_indices("linspace", total, 32)
    truncated = spread_indices("dfb-linspace", total, 32)
    # DeepfakeBench's rule, written out: floor(i * (n - 1) / 31); ffx's: the nearest integer.
    assert truncated == [i * (total - 1) // 31 for i in range(32)]
    assert rounded == [round(i * (total - 1) / 31) for i in range(32)]
    assert sum(a != b for a, b in zip(rounded, truncated)) == 15
    assert parse_sampling("dfb-linspace:32").plan(total).wanted == frozenset(truncated)
    assert parse_sampling("linspace:32").plan(total).wanted == frozenset(rounded)
    assert load_manifest("folder", {"sampling": "dfb-linspace:32"}).sampling == "dfb-linspace:32"


# ---------------------------------------------------------------- DeepfakeBench export


def dfb_load(config: dict, name: str, mode: str) -> list[tuple[str, int, str]]:
    """(frame path, label, unique video name) as abstract_dataset.py's
    collect_img_and_label_for_one_dataset and load_rgb find them (frame_num large, image level)."""
    with open(os.path.join(config["dataset_json_folder"], name + ".json")) as file:
        info = json.load(file)
    found = []
    for label in info[name]:
        videos = info[name][label][mode]
        if name in FFPP_FAMILY:
            videos = videos[config["compression"]]
        for video_name, video in videos.items():
            value = config["label_dict"][video["label"]]
            frames = sorted(video["frames"], key=lambda x: int(x.split("/")[-1].split(".")[0]))
            assert frames == video["frames"]  # written in frame order already
            for path in frames:
                if path[0] != ".":
                    path = f"./{config['rgb_dir']}\\" + path
                assert os.path.exists(path), path
                found.append((path, value, video["label"] + "_" + video_name))
    return found


def check_dfb_export(build: Path, out: Path, dfb_root: Path, name: str, monkeypatch) -> None:
    report = run_export(build, "deepfakebench", out, dfb_root=dfb_root)
    config = yaml.safe_load((out / "deepfakebench.yaml").read_text())
    assert config["lmdb"] is False and config["train_dataset"] == [name]
    assert report.config == (out / "deepfakebench.yaml").read_text()
    config["rgb_dir"] = "./datasets/rgb"  # DeepfakeBench's default: unused, every path starts with ./
    videos = {row["key"]: row for row in rows(build, "videos")}
    crops = Counter(row["key"] for row in rows(build, "faces") if row["status"] == "ok")
    monkeypatch.chdir(dfb_root)
    seen: dict[str, int] = {}
    for split in ("train", "val", "test"):
        for path, label, video_name in dfb_load(config, name, split):
            key = PurePosixPath(path).parent.name
            video = videos[key]
            assert video["split"] == split
            assert label == (0 if video["label_name"] in ("real", "pristine") else 1)
            assert video_name.endswith(key)
            frame = int(PurePosixPath(path).stem)
            assert Path(path).read_bytes() == (build / f"faces/{key}/{frame:06d}.png").read_bytes()
            seen[key] = seen.get(key, 0) + 1
    assert seen == dict(crops)
    assert sum(report.crops.values()) == sum(crops.values())


def test_deepfakebench_export_of_an_ffpp_build_reads_back(ffpp_tree, tmp_path: Path, monkeypatch) -> None:
    root, splits = ffpp_tree
    build = tmp_path / "build"
    run_index(load_manifest("ffpp-c23"), root, build, splits)
    crop_build_from_index(build)
    dfb_root = tmp_path / "DeepfakeBench"
    dfb_root.mkdir()
    check_dfb_export(build, tmp_path / "export", dfb_root, "FaceForensics++", monkeypatch)
    info = json.loads((tmp_path / "export/dataset_json/FaceForensics++.json").read_text())
    assert sorted(info["FaceForensics++"]) == ["FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FF-real"]
    # 10 originals and 4 methods x 10 fakes; official split: 3 train pairs, 1 val, 1 test
    per_split = {
        split: sum(len(info["FaceForensics++"][label][split]["c23"]) for label in info["FaceForensics++"])
        for split in ("train", "val", "test")
    }
    assert per_split == {"train": 30, "val": 10, "test": 10}
    method_file = json.loads((tmp_path / "export/dataset_json/FF-DF.json").read_text())
    assert sorted(method_file["FF-DF"]) == ["FF-DF", "FF-real"]
    config = yaml.safe_load((tmp_path / "export/deepfakebench.yaml").read_text())
    assert config["compression"] == "c23" and config["label_dict"]["FF-real"] == 0
    assert config["frame_num"] == {"train": FRAMES, "test": FRAMES}


def test_deepfakebench_export_of_a_folder_build_reads_back(tmp_path: Path, monkeypatch) -> None:
    build = folder_build(tmp_path, 4)
    check_dfb_export(build, tmp_path / "export", tmp_path, "ffx-folder", monkeypatch)
    info = json.loads((tmp_path / "export/dataset_json/ffx-folder.json").read_text())
    assert sorted(info["ffx-folder"]) == ["ffx-folder_fake", "ffx-folder_real"]
    assert all(set(per_split) == {"train", "val", "test"} for per_split in info["ffx-folder"].values())
    # the faceless video has no crop and is left out
    assert "fake__none" not in info["ffx-folder"]["ffx-folder_fake"][rows(build, "videos")[0]["split"]]


# ---------------------------------------------------------------- LIB


def test_lib_export_writes_its_six_lists_per_dataset(tmp_path: Path) -> None:
    build = folder_build(tmp_path, 4)
    out = tmp_path / "lib"
    assert main(["export", str(build), "--format", "lib", "--out", str(out)]) == 0
    lists = sorted(path.name for path in (out / "folder").iterdir())
    assert lists == sorted(f"{s}_{k}.txt" for s in ("train", "val", "test") for k in ("real", "fake"))
    videos = {row["key"]: row for row in rows(build, "videos")}
    listed = 0
    for path in (out / "folder").iterdir():
        split, kind = path.stem.split("_")
        for line in path.read_text().splitlines():
            label, folder, frames = re.sub(r"\s", "", line).split(",")  # as LIB's read_txt
            pngs = [name for name in os.listdir(folder) if ".png" in name]
            video = videos[Path(folder).name]
            assert (video["split"], video["label_name"]) == (split, kind)
            assert int(label) == (kind == "fake") and int(frames) == len(pngs) == FRAMES
            listed += 1
    assert listed == 8  # 4 real, 4 fake; the faceless video has no crop


# ---------------------------------------------------------------- import, shards, wids, card


def write_image(path: Path, rgb: np.ndarray, extension: str = ".png") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def make_crops_tree(root: Path) -> dict[str, np.ndarray]:
    """real/ and fake/ folders of 3 videos x 4 crops (one JPEG), one unreadable image."""
    pixels = {}
    for label in ("real", "fake"):
        for number in range(3):
            for frame in range(4):
                rgb = crop_pixels(f"{label}{number}", frame, 24)
                relative = f"{label}/vid{number}/{frame * 10:03d}.png"
                write_image(root / relative, rgb)
                pixels[relative] = rgb
    write_image(root / "fake/vid2/040.jpg", crop_pixels("jpeg", 0, 24), ".jpg")
    pixels["fake/vid2/040.jpg"] = cv2.cvtColor(cv2.imread(str(root / "fake/vid2/040.jpg")), cv2.COLOR_BGR2RGB)
    (root / "real/vid0/050.png").write_bytes(b"not an image")
    return pixels


def test_imported_crops_shard_and_verify(tmp_path: Path) -> None:
    source, build = tmp_path / "crops", tmp_path / "build"
    pixels = make_crops_tree(source)
    assert main(["import-crops", str(source), "--build", str(build), "--format", "folders"]) == 0
    faces = rows(build, "faces")
    assert Counter(row["status"] for row in faces) == {"ok": 25, "error": 1}
    bad = next(row for row in faces if row["status"] == "error")
    assert bad["frame_index"] == 50 and "050.png is not a readable image" in bad["error"]
    for row in faces:
        if row["status"] == "ok":  # the crop holds the source image's pixels
            crop = cv2.cvtColor(cv2.imread(str(build / row["path"])), cv2.COLOR_BGR2RGB)
            video = next(v for v in rows(build, "videos") if v["key"] == row["key"])
            matches = [rgb for path, rgb in pixels.items() if path.startswith(video["path"] + "/")]
            assert any(np.array_equal(crop, rgb) for rgb in matches)
    frames = {(row["key"], row["frame_index"]): row for row in rows(build, "frames")}
    assert frames[("real__vid0", 10)]["pixels_sha256"] == pixels_sha256(pixels["real/vid0/010.png"])

    assert main(["shard", str(build)]) == 0
    report = verify_shards(build)
    assert report.problems == [] and report.samples == 25
    stages = {stage.stage: stage for stage in build_status(build)}
    assert {"index", "frames", "faces", "samples"} <= set(stages)
    assert all(stages[name].merged and stages[name].currency.ok for name in ("frames", "faces", "samples"))
    index = json.loads((build / "shards/index.json").read_text())

    # wids index, read as wids's resolve_dsdesc and ShardListDataset do (wids is not in the lock)
    for split, totals in index["splits"].items():
        path = build / "shards" / f"{split}.wids.json"
        desc = json.loads(path.read_text())
        assert desc["__kind__"] == "wids-shard-index-v1" and desc["wids_version"] == 1
        assert all("url" in shard and "nsamples" in shard for shard in desc["shardlist"])
        assert sum(shard["nsamples"] for shard in desc["shardlist"]) == totals["samples"]
        for shard in desc["shardlist"]:
            tar = path.parent / shard["url"]  # relative urls resolve against the JSON's folder
            with tarfile.open(tar) as archive:
                keys = {member.name.split(".", 1)[0] for member in archive}
            assert len(keys) == shard["nsamples"] and tar.stat().st_size == shard["filesize"]

    # the dataset card: YAML front matter that maps every split's shards
    card = yaml.safe_load(front_matter(build / "shards/README.md"))
    files = {entry["split"]: entry["path"] for entry in card["configs"][0]["data_files"]}
    hf = {"train": "train", "val": "validation", "test": "test"}
    assert set(files) == {hf[split] for split in index["splits"]}
    for split in index["splits"]:
        matched = sorted(path.name for path in (build / "shards").glob(files[hf[split]]))
        assert matched == sorted(e["name"] for e in index["shards"] if e["split"] == split)
    text = (build / "shards/README.md").read_text()
    assert "Y, Cb, Cr" in text and "R, G, B" in text

    # a run with nothing to do rewrites nothing; a damaged wids index is named by verify
    before = {path.name: path.stat().st_mtime_ns for path in (build / "shards").iterdir()}
    assert main(["shard", str(build)]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in (build / "shards").iterdir()} == before
    split = next(iter(index["splits"]))
    wids = build / "shards" / f"{split}.wids.json"
    desc = json.loads(wids.read_text())
    desc["shardlist"][0]["nsamples"] += 1
    wids.write_text(json.dumps(desc))
    problems = verify_shards(build).problems
    assert len(problems) == 1 and f"{split}.wids.json" in problems[0]
    assert main(["shard", str(build)]) == 0 and verify_shards(build).problems == []


def test_import_crops_runs_through_the_engine(tmp_path: Path) -> None:
    """Locks, ledger and run log as for any stage; a second import reads every image again."""
    source, build = tmp_path / "crops", tmp_path / "build"
    pixels = make_crops_tree(source)
    report = run_import(source, build, workers=2, show_progress=False)
    assert (report.videos, report.crops, report.rows_by_status) == (6, 25, {"ok": 25, "error": 1})
    runs = [json.loads(line) for line in (build / "runs.jsonl").read_text().splitlines()]
    assert [(run["stage"], run["items"]) for run in runs] == [("frames+faces", 6)]
    assert not (build / "frames.parts").exists() and not (build / "faces.parts").exists()  # merged
    # An image changed in place: the folder's index entry is the same, the import reads it again.
    changed = np.full((24, 24, 3), 7, np.uint8)
    write_image(source / "real/vid1/010.png", changed)
    run_import(source, build, show_progress=False)
    frames = {(row["key"], row["frame_index"]): row for row in rows(build, "frames")}
    assert frames[("real__vid1", 10)]["pixels_sha256"] == pixels_sha256(changed)
    assert frames[("real__vid0", 10)]["pixels_sha256"] == pixels_sha256(pixels["real/vid0/010.png"])
    # A crop run on the build holds the faces lock: the import exits naming it, writing nothing.
    with (
        hold_lock(BuildDir(build), "faces", Part()),
        pytest.raises(BuildError, match="another ffx crop is running on"),
    ):
        run_import(source, build, show_progress=False)
    assert len((build / "runs.jsonl").read_text().splitlines()) == 2


def test_deepfakebench_export_imports_back(tmp_path: Path, monkeypatch) -> None:
    """ffx -> DeepfakeBench JSON -> ffx: the same crops, labels and splits."""
    build = folder_build(tmp_path, 3)
    run_export(build, "deepfakebench", tmp_path / "dfb", dfb_root=tmp_path)
    again = tmp_path / "again"
    report = run_import(tmp_path, again, "deepfakebench", tmp_path / "dfb/dataset_json/ffx-folder.json")
    assert report.rows_by_status == {"ok": 6 * FRAMES}

    def fingerprint(where: Path) -> Counter:
        split_of = {row["key"]: (row["split"], row["label_name"]) for row in rows(where, "videos")}
        return Counter(
            (
                *split_of[row["key"]],
                row["frame_index"],
                hashlib.sha256((where / row["path"]).read_bytes()).hexdigest(),
            )
            for row in rows(where, "faces")
            if row["status"] == "ok"
        )

    assert fingerprint(again) == fingerprint(build)
    assert Counter(row["method"] for row in rows(again, "videos")) == {
        "ffx-folder_real": 3,
        "ffx-folder_fake": 3,
    }
    run_shard(again, show_progress=False)
    assert verify_shards(again).problems == []


def test_deepfakebench_json_with_compression_levels_and_windows_paths(tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    info: dict = {"FF-DF": {}}
    for label, split in (("FF-real", "train"), ("FF-DF", "test")):
        frames = []
        for frame in (0, 16, 32):
            relative = f"FaceForensics++/x/c23/frames/{label}v/{frame:03d}.png"
            write_image(root / relative, crop_pixels(label, frame, 16))
            frames.append(relative.replace("/", "\\"))
        levels = {"train": {"c23": {}}, "val": {"c23": {}}, "test": {"c23": {}}}
        levels[split]["c23"][f"{label}v"] = {"label": label, "frames": frames}
        info["FF-DF"][label] = levels
    (root / "FF-DF.json").write_text(json.dumps(info))
    build = tmp_path / "build"
    run_import(root, build, "deepfakebench", root / "FF-DF.json")
    videos = {row["method"]: row for row in rows(build, "videos")}
    assert {m: (v["split"], v["label_name"]) for m, v in videos.items()} == {
        "FF-real": ("train", "real"),
        "FF-DF": ("test", "fake"),
    }
    assert sorted(row["frame_index"] for row in rows(build, "faces")) == [0, 0, 16, 16, 32, 32]
    with pytest.raises(Exception, match="compression levels c23, not c40"):
        run_import(root, tmp_path / "b2", "deepfakebench", root / "FF-DF.json", compression="c40")
    shutil.rmtree(tmp_path / "b2", ignore_errors=True)


def test_deepfakebench_export_writes_landmarks_where_its_loader_looks(tmp_path: Path, monkeypatch) -> None:
    build = folder_build(tmp_path, 1)
    faces = rows(build, "faces")
    for row in faces:
        if row["status"] == "ok":  # 3 points in frame pixels; the crop is the frame's 32x32 box
            row["dense_landmarks"] = [4.0, 6.0, 16.0, 16.0, 30.5, 2.0]
            row["mask_path"] = row["path"]  # any PNG stands for a mask here
    write_stamped(build, "faces", [{k: v for k, v in row.items() if k != "made_from"} for row in faces])
    report = run_export(build, "deepfakebench", tmp_path / "dfb", dfb_root=tmp_path)
    assert not any("no landmark" in note for note in report.notes)
    config = yaml.safe_load((tmp_path / "dfb" / "deepfakebench.yaml").read_text())
    assert (config["resolution"], config["with_landmark"], config["with_mask"]) == (256, True, True)
    info = json.loads((tmp_path / "dfb/dataset_json/ffx-folder.json").read_text())
    monkeypatch.chdir(tmp_path)
    checked = 0
    for per_split in info["ffx-folder"].values():
        for videos in per_split.values():
            for video in videos.values():
                for frame in video["frames"]:
                    # abstract_dataset.py: image_path.replace('frames', 'landmarks').replace('.png', '.npy')
                    points = np.load(frame.replace("frames", "landmarks").replace(".png", ".npy"))
                    # Its loader: the image resized to `resolution`, the landmarks as written.
                    resolution = config["resolution"]
                    image = cv2.resize(cv2.imread(frame), (resolution, resolution))
                    scale = resolution / 32  # the resolution over the crop box's side
                    expected = (np.array([[4, 6], [16, 16], [30.5, 2]]) + 0.5) * scale - 0.5
                    assert points.shape == (3, 2) and np.allclose(points, expected)
                    height, width = image.shape[:2]  # albumentations' check: every keypoint inside
                    assert ((points >= 0) & (points <= [width, height])).all()
                    assert Path(frame.replace("frames", "masks")).is_file()
                    checked += 1
    assert checked == 2 * FRAMES
    # Imported back, what the export wrote is kept: the keys, the dataset, the landmarks (in the
    # crop's own pixels again) and the masks.
    again = tmp_path / "again"
    run_import(tmp_path, again, "deepfakebench", tmp_path / "dfb/dataset_json/ffx-folder.json")
    exported = {row["key"] for row in faces if row["status"] == "ok"}
    assert {row["key"] for row in rows(again, "videos")} == exported  # not datasets__ffx__...
    assert {row["dataset"] for row in rows(again, "videos")} == {"ffx-folder"}
    imported = {
        (row["key"], row["frame_index"]): row for row in rows(again, "faces") if row["status"] == "ok"
    }
    assert len(imported) == 2 * FRAMES
    for row in faces:
        if row["status"] != "ok":
            continue
        back = imported[(row["key"], row["frame_index"])]
        side = back["crop_x2"]  # the imported crop is the whole image: the build's crop size
        expected = (np.array([[4, 6], [16, 16], [30.5, 2]]) + 0.5) * side / 32 - 0.5
        assert np.allclose(np.array(back["dense_landmarks"]).reshape(-1, 2), expected, atol=1e-3)
        mask = cv2.imread(str(again / back["mask_path"]), cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == (side, side)
