"""`ffx index` over generated trees of every layout: counts, splits, groups, keys, errors."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ffx.errors import BuildError, InputError
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.recipe.schema import is_safe_key, key_from_path
from ffx.pipeline.recipe.split import SPLIT_METHOD
from ffx.pipeline.stages.index import run_index
from tests.conftest import FFPP_METHODS, FFPP_PAIRS, touch


def read_rows(build: Path) -> list[dict]:
    return pq.read_table(build / "videos.parquet").to_pylist()


def splits_per_group(rows: list[dict]) -> dict[str, set[str]]:
    groups = defaultdict(set)
    for row in rows:
        groups[row["group"]].add(row["split"])
    return groups


def test_ffpp_official_splits(ffpp_tree, tmp_path):
    root, splits = ffpp_tree
    report = run_index(load_manifest("ffpp-c23"), root, tmp_path / "build", splits)
    rows = read_rows(tmp_path / "build")
    # 10 originals + 4 methods x 5 pairs x 2 directions
    assert report.videos == len(rows) == 10 + 4 * 10
    assert Counter((row["split"], row["method"]) for row in rows) == {
        **{("train", "original"): 6, ("val", "original"): 2, ("test", "original"): 2},
        **{("train", method): 6 for method in FFPP_METHODS},
        **{("val", method): 2 for method in FFPP_METHODS},
        **{("test", method): 2 for method in FFPP_METHODS},
    }
    labels = {row["method"]: (row["label"], row["label_name"]) for row in rows}
    assert labels == {
        "original": (0, "pristine"),
        "Deepfakes": (1, "Deepfakes"),
        "Face2Face": (2, "Face2Face"),
        "FaceSwap": (3, "FaceSwap"),
        "NeuralTextures": (4, "NeuralTextures"),  # not 3, as in the public code
    }
    by_path = {row["path"]: row for row in rows}
    for split, pairs in FFPP_PAIRS.items():
        for first, second in pairs:
            for stem in (f"{first}_{second}", f"{second}_{first}"):
                fake = by_path[f"manipulated_sequences/Deepfakes/c23/videos/{stem}.mp4"]
                assert fake["split"] == split
                original = by_path[f"original_sequences/youtube/c23/videos/{stem[:3]}.mp4"]
                assert fake["original_key"] == original["key"]
    assert all(len(splits) == 1 for splits in splits_per_group(rows).values())
    assert len({row["group"] for row in rows}) == 5
    keys = [row["key"] for row in rows]
    assert len(set(keys)) == len(keys) and all(is_safe_key(key) for key in keys)
    assert keys == sorted(keys)
    assert all(row["size_bytes"] == 1 for row in rows)


def test_ffpp_binary_and_seeded_fallback(ffpp_tree, tmp_path):
    root, _ = ffpp_tree
    manifest = load_manifest("ffpp-c23", assignments=["labels.mode=binary"])
    run_index(manifest, root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert Counter(row["label"] for row in rows) == {0: 10, 1: 40}
    assert all(len(splits) == 1 for splits in splits_per_group(rows).values())
    assert set(Counter(row["split"] for row in rows)) <= {"train", "val", "test"}


def test_index_is_deterministic(ffpp_tree, tmp_path):
    root, _ = ffpp_tree
    run_index(load_manifest("ffpp-c23"), root, tmp_path / "a")
    run_index(load_manifest("ffpp-c23"), root, tmp_path / "b")
    assert (tmp_path / "a/videos.parquet").read_bytes() == (tmp_path / "b/videos.parquet").read_bytes()
    other_seed = load_manifest("ffpp-c23", {"seed": 7})
    run_index(other_seed, root, tmp_path / "c")
    assert read_rows(tmp_path / "a") != read_rows(tmp_path / "c")


def test_ffpp_missing_split_file(ffpp_tree, tmp_path):
    root, splits = ffpp_tree
    (splits / "val.json").unlink()
    with pytest.raises(InputError, match=r"split file not found: .*val.json"):
        run_index(load_manifest("ffpp-c23"), root, tmp_path / "build", splits)


def test_celebdf_identities_and_test_list(tmp_path):
    root = tmp_path / "celebdf"
    for identity in range(6):
        for clip in range(2):
            touch(root, f"Celeb-real/id{identity}_{clip:04d}.mp4")
    fakes = [(0, 1), (1, 0), (2, 3), (4, 5), (5, 4)]
    for target, source in fakes:
        touch(root, f"Celeb-synthesis/id{target}_id{source}_0000.mp4")
    for number in range(4):
        touch(root, f"YouTube-real/{number:05d}.mp4")
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id2_id3_0000.mp4\n1 Celeb-real/id2_0000.mp4\n"
    )
    run_index(load_manifest("celebdf-v2"), root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert len(rows) == 12 + 5 + 4
    test_paths = {row["path"] for row in rows if row["split"] == "test"}
    assert test_paths == {
        "YouTube-real/00000.mp4",
        "Celeb-synthesis/id2_id3_0000.mp4",
        "Celeb-real/id2_0000.mp4",
    }
    assert Counter(row["label"] for row in rows) == {0: 16, 1: 5}
    by_path = {row["path"]: row for row in rows}
    # id0 and id1 share a fake, so all their videos share a group; so do id4 and id5
    assert len({by_path[p]["group"] for p in ("Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4")}) == 1
    assert (
        by_path["Celeb-synthesis/id0_id1_0000.mp4"]["original_key"]
        == by_path["Celeb-real/id0_0000.mp4"]["key"]
    )
    outside_test = [row for row in rows if row["split"] != "test"]
    assert {row["split"] for row in outside_test} <= {"train", "val"}
    assert all(len(s) == 1 for s in splits_per_group(outside_test).values())


def test_dfdc_metadata(tmp_path):
    root = tmp_path / "dfdc"
    metadata = {
        "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ddd.mp4": {"label": "REAL", "split": "train", "original": None},
    }
    for part in ("dfdc_train_part_0", "dfdc_train_part_1"):
        for name in metadata:
            touch(root, f"{part}/{name}")
        (root / part / "metadata.json").write_text(json.dumps(metadata))
    run_index(load_manifest("dfdc"), root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert len(rows) == 8
    assert Counter(row["label_name"] for row in rows) == {"real": 4, "fake": 4}
    by_path = {row["path"]: row for row in rows}
    fake, original = by_path["dfdc_train_part_1/ccc.mp4"], by_path["dfdc_train_part_1/aaa.mp4"]
    assert fake["original_key"] == original["key"] and fake["group"] == original["group"]
    assert all(len(s) == 1 for s in splits_per_group(rows).values())


def test_dfdc_bad_label(tmp_path):
    root = tmp_path / "dfdc"
    touch(root, "dfdc_train_part_0/a.mp4")
    (root / "dfdc_train_part_0/metadata.json").write_text(json.dumps({"a.mp4": {"label": "MAYBE"}}))
    with pytest.raises(InputError, match="label must be REAL or FAKE"):
        run_index(load_manifest("dfdc"), root, tmp_path / "build")


def test_mcx_api_datalist(tmp_path):
    root = tmp_path / "data"
    for name in ("a.mp4", "b c.mp4", "dé.mp4"):
        touch(root, f"videos/{name}")
    (root / "datalist.txt").write_text("videos/a.mp4 0\nvideos/b c.mp4 4\n\n# comment\nvideos/dé.mp4 2\n")
    run_index(load_manifest("mcx-api-datalist"), root, tmp_path / "build")
    rows = {row["path"]: row for row in read_rows(tmp_path / "build")}
    assert {path: (row["label"], row["label_name"]) for path, row in rows.items()} == {
        "videos/a.mp4": (0, "pristine"),
        "videos/b c.mp4": (4, "NeuralTextures"),
        "videos/dé.mp4": (2, "Face2Face"),
    }
    assert all(is_safe_key(row["key"]) for row in rows.values())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("videos/a.mp4\n", r"datalist.txt:1: expected 'path label'"),
        ("videos/a.mp4 x\n", r"datalist.txt:1: expected 'path label'"),
        ("videos/a.mp4 9\n", r"datalist.txt:1: unknown label 9"),
        ("../outside.mp4 0\n", r"datalist.txt:1: path escapes the root"),
        ("videos/../../outside.mp4 0\n", r"datalist.txt:1: path escapes the root"),
        ("/etc/passwd 0\n", r"datalist.txt:1: path escapes the root"),
        (
            "videos/a.mp4 0\nvideos/a.mp4 1\n",
            r"datalist.txt:2: duplicate entry videos/a.mp4 \(first at .*:1\)",
        ),
        ("videos/missing.mp4 0\n", r"datalist.txt:1: listed video does not exist"),
    ],
)
def test_datalist_bad_lines(tmp_path, content, message):
    root = tmp_path / "data"
    touch(root, "videos/a.mp4")
    touch(tmp_path, "outside.mp4")
    (root / "datalist.txt").write_text(content)
    with pytest.raises(InputError, match=message):
        run_index(load_manifest("mcx-api-datalist"), root, tmp_path / "build")


def test_lib_and_csv_lists(tmp_path):
    root = tmp_path / "data"
    for number in range(6):
        touch(root, f"v{number}.mp4")
    (root / "labels.csv").write_text("".join(f"{number % 2},v{number}.mp4,30\n" for number in range(6)))
    run_index(load_manifest("lib-datalist"), root, tmp_path / "lib")
    assert Counter(row["label"] for row in read_rows(tmp_path / "lib")) == {0: 3, 1: 3}

    (root / "videos.csv").write_text(
        "path,label,split,group\nv0.mp4,real,test,g1\nv1.mp4,fake,,g1\nv2.mp4,fake,,g2\nv3.mp4,1,,\n"
    )
    run_index(load_manifest("csv"), root, tmp_path / "csv")
    rows = {row["path"]: row for row in read_rows(tmp_path / "csv")}
    assert rows["v0.mp4"]["split"] == "test" and rows["v0.mp4"]["label"] == 0
    assert rows["v0.mp4"]["group"] == rows["v1.mp4"]["group"]
    assert rows["v3.mp4"]["label_name"] == "fake"
    (root / "videos.csv").write_text("Path,Label\nv0.mp4,real\nvideos/../v1.mp4,fake\n")  # item 9, item 3
    run_index(load_manifest("csv"), root, tmp_path / "csv-header")
    assert {row["path"] for row in read_rows(tmp_path / "csv-header")} == {"v0.mp4", "v1.mp4"}
    (root / "videos.csv").write_text("v0.mp4,real,holdout\n")
    with pytest.raises(InputError, match=r"videos.csv:1: split must be one of"):
        run_index(load_manifest("csv"), root, tmp_path / "csv2")


def test_folder_labelled_unlabelled_and_unknown(tmp_path):
    labelled = tmp_path / "labelled"
    for name in ("real/a.mp4", "real/sub/b.MP4", "fake/c.avi", "fake/notes.txt"):
        touch(labelled, name)
    run_index(load_manifest("folder"), labelled, tmp_path / "b1")
    rows = {row["path"]: row["label"] for row in read_rows(tmp_path / "b1")}
    assert rows == {"real/a.mp4": 0, "real/sub/b.MP4": 0, "fake/c.avi": 1}

    unlabelled = tmp_path / "unlabelled"
    for name in ("x.mp4", "clips/y.mov"):
        touch(unlabelled, name)
    run_index(load_manifest("folder"), unlabelled, tmp_path / "b2")
    assert {(row["label"], row["label_name"]) for row in read_rows(tmp_path / "b2")} == {(-1, "unknown")}

    touch(labelled, "other/d.mp4")
    with pytest.raises(InputError, match="unknown label 'other'"):
        run_index(load_manifest("folder"), labelled, tmp_path / "b3")


def test_bad_roots_and_empty(tmp_path):
    with pytest.raises(InputError, match="dataset root not found"):
        run_index(load_manifest("folder"), tmp_path / "absent", tmp_path / "build")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty dataset"):
        run_index(load_manifest("folder"), tmp_path / "empty", tmp_path / "build")
    with pytest.raises(InputError, match="split folder not found"):
        run_index(load_manifest("ffpp-c23"), tmp_path / "empty", tmp_path / "build", tmp_path / "nosplits")


def test_key_collision(tmp_path):
    root = tmp_path / "data"
    touch(root, "real/a.mp4")
    touch(root, "real/a.avi")
    with pytest.raises(InputError, match=r"key collision: real/a\.avi and real/a\.mp4"):
        run_index(load_manifest("folder"), root, tmp_path / "build")


def test_keys_are_safe_and_distinct():
    assert key_from_path("original_sequences/youtube/c23/videos/000.mp4") == (
        "original_sequences__youtube__c23__videos__000"
    )
    unsafe = ["a b.mp4", "a-b.mp4", "dé.mp4", "x.y.mp4", "a__b/c.mp4", "a/__b/c.mp4", "..mp4"]
    keys = [key_from_path(path) for path in unsafe]
    assert all(is_safe_key(key) for key in keys) and len(set(keys)) == len(keys)
    # spelled out: the space becomes "-", the extension goes, 8 hex digits of the path's sha1 follow
    assert key_from_path("a b.mp4") == "a-b-" + hashlib.sha1(b"a b.mp4").hexdigest()[:8]
    assert key_from_path("a__b/c.mp4") == "a__b__c-" + hashlib.sha1(b"a__b/c.mp4").hexdigest()[:8]


def test_reindex_with_other_manifest_refused(ffpp_tree, tmp_path):
    root, _ = ffpp_tree
    build = tmp_path / "build"
    run_index(load_manifest("ffpp-c23"), root, build)
    (build / "frames.parquet").write_bytes(b"")
    with pytest.raises(BuildError, match=r"seed.*use a new --build directory"):
        run_index(load_manifest("ffpp-c23", {"seed": 3}), root, build)


def test_reindex_after_adding_videos_moves_no_video(tmp_path):
    root = tmp_path / "data"
    for label, count in (("real", 40), ("fake", 60)):
        for number in range(count):
            touch(root, f"{label}/clip{number:03d}.mp4")
    build = tmp_path / "build"
    run_index(load_manifest("folder"), root, build)
    before = {row["key"]: row["split"] for row in read_rows(build)}
    assert json.loads((build / "index.json").read_text())["split_method"] == SPLIT_METHOD
    for label in ("real", "fake"):
        for number in range(100, 115):
            touch(root, f"{label}/clip{number:03d}.mp4")
    (root / "fake/clip000.mp4").unlink()
    run_index(load_manifest("folder"), root, build)  # no later stages yet: re-indexing is allowed
    after = {row["key"]: row["split"] for row in read_rows(build)}
    assert len(after) == len(before) + 30 - 1
    assert {key: after[key] for key in before if key in after} == {
        key: split for key, split in before.items() if key != "fake__clip000"
    }
    labels_per_split = defaultdict(set)
    for row in read_rows(build):
        labels_per_split[row["split"]].add(row["label_name"])
    assert labels_per_split == {split: {"real", "fake"} for split in ("train", "val", "test")}


@pytest.mark.parametrize("previous", [None, "greedy-v0"])
def test_reindex_of_a_build_split_by_another_method_refused(tmp_path, previous):
    root = tmp_path / "data"
    for number in range(6):
        touch(root, f"real/{number}.mp4")
        touch(root, f"fake/{number}.mp4")
    build = tmp_path / "build"
    run_index(load_manifest("folder"), root, build)
    index_path = build / "index.json"
    index = json.loads(index_path.read_text())
    index.pop("split_method")
    if previous:
        index["split_method"] = previous
    index_path.write_text(json.dumps(index))
    run_index(load_manifest("folder"), root, build)  # only the index so far: rewritten in place
    assert json.loads(index_path.read_text())["split_method"] == SPLIT_METHOD
    index_path.write_text(json.dumps(index))
    (build / "frames.parquet").write_bytes(b"")
    with pytest.raises(BuildError, match=r"split with an older method .* use a new --build directory"):
        run_index(load_manifest("folder"), root, build)
    assert json.loads(index_path.read_text()) == index  # nothing written
