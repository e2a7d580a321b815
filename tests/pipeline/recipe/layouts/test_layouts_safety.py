"""Paths a recipe, a list or a dataset tree can steer: label names become export folders, list
files and listed paths stay under the root, symbolic links are followed (dangling ones too)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.cli import main
from ffx.errors import BuildError, InputError, ManifestError
from ffx.pipeline.recipe import layouts
from ffx.pipeline.recipe.layouts import Entry, Scan
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.export import run_export
from ffx.pipeline.stages.index import run_index
from tests.assertions import one_error_line
from tests.conftest import touch
from tests.generated import make_cropped_build

SECRET = "TOPSECRET first line of a file outside the root"


def read_rows(build: Path) -> dict[str, dict]:
    return {row["path"]: row for row in pq.read_table(build / "videos.parquet").to_pylist()}


def recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f'name = "x"\n{body}')
    return path


# ---------------------------------------------------------------- label names (item 2)


@pytest.mark.parametrize("name", ["../../../X", "a/b", "..", ".", ".hidden", "-rf", "a b", "", "a\\b"])
def test_recipe_label_names_must_be_safe_folder_names(tmp_path, name):
    path = recipe(
        tmp_path,
        f'layout = {{ kind = "folder" }}\n[labels]\nnames = {{ real = 0, {json.dumps(name)} = 1 }}\n',
    )
    with pytest.raises(
        ManifestError, match=r"recipe.toml: labels.names: .*not a safe folder name \(allowed: "
    ):
        load_manifest(path)


def test_label_folders_are_checked_like_label_names(tmp_path):
    path = recipe(tmp_path, 'layout = { kind = "folder", label_folders = ["real", "../fake"] }\n')
    with pytest.raises(ManifestError, match=r"layout.folder.label_folders: .*'../fake' is not a safe folder"):
        load_manifest(path)
    safe = recipe(tmp_path, 'layout = { kind = "folder", label_folders = ["réel", "Face2Face", "v1.0"] }\n')
    assert load_manifest(safe).layout.label_folders == ("réel", "Face2Face", "v1.0")


def test_cli_index_refuses_an_unsafe_label_name_in_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    touch(root, "real/a.mp4")
    path = recipe(
        tmp_path, 'layout = { kind = "folder" }\n[labels]\nnames = { real = 0, "../../../X" = 1 }\n'
    )
    assert main(["index", str(path), "--root", str(root), "--build", str(tmp_path / "build")]) == 1
    line = one_error_line(capsys)
    assert "labels.names" in line and "'../../../X'" in line and "allowed:" in line
    assert not (tmp_path / "build").exists()


def test_layout_given_label_names_pass_the_same_check(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"layout folder: label name '\.\./x' is not a safe folder name"):
        layouts.check_label_names("folder", Scan("folder", [], {"real": 0, "../x": 1}))

    def scan_with_a_bad_folder_name(root, layout, splits_dir):
        entry = Entry("a.mp4", "method", "../../../X", identities=("video:a",), origin="list:1")
        return Scan("folder", [entry], {"real": 0, "../../../X": 1})

    root = tmp_path / "data"
    touch(root, "a.mp4")
    monkeypatch.setitem(layouts.LAYOUTS, "folder", scan_with_a_bad_folder_name)
    with pytest.raises(InputError, match=r"'\.\./\.\./\.\./X' is not a safe folder name"):
        run_index(load_manifest("folder"), root, tmp_path / "build")
    assert not (tmp_path / "build").exists()


def _set_videos_column(build: Path, key: str, column: str, value: str) -> None:
    table = pq.read_table(build / "videos.parquet")
    rows = table.to_pylist()
    for row in rows:
        if row["key"] == key:
            row[column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), build / "videos.parquet")


def test_export_refuses_to_write_outside_out(tmp_path, capsys):
    """A build indexed before label names were checked (or an edited table): export writes
    nothing, and above all nothing outside --out."""
    build = make_cropped_build(tmp_path, videos_per_label=2, frames=2)
    _set_videos_column(build, "real__clip0", "label_name", "../../../X")
    out = tmp_path / "deep" / "er" / "out"
    assert main(["export", str(build), "--format", "imagefolder", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "real__clip0" in line and "label_name '../../../X' is not a safe folder name" in line
    assert not (tmp_path / "X").exists() and not out.exists()

    _set_videos_column(build, "real__clip0", "label_name", "real")
    _set_videos_column(build, "real__clip0", "split", "../../escaped")
    with pytest.raises(BuildError, match=r"split '\.\./\.\./escaped' is not a safe folder name"):
        run_export(build, "mcx-api", out)
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not out.exists()


# ---------------------------------------------------------------- symbolic links (item 3)


def test_linked_folders_are_followed_and_reported(tmp_path):
    """A label folder linked from another disk is indexed like a real one, by its path below the
    root; a link back up the tree is not followed round and round."""
    root, other = tmp_path / "data", tmp_path / "other-disk"
    touch(root, "real/a.mp4")
    touch(other, "fakes/b.mp4")
    touch(other, "fakes/sub/c.mp4")
    (root / "fake").symlink_to(other / "fakes", target_is_directory=True)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    report = run_index(load_manifest("folder"), root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert set(rows) == {"real/a.mp4", "fake/b.mp4", "fake/sub/c.mp4"}
    assert rows["fake/b.mp4"]["key"] == "fake__b" and rows["fake/b.mp4"]["label_name"] == "fake"
    assert rows["fake/sub/c.mp4"]["resolved"] == str((other / "fakes" / "sub" / "c.mp4").resolve())
    assert rows["real/a.mp4"]["resolved"] == ""  # no link on the way
    assert any("2 videos are reached through symbolic links that lead outside" in n for n in report.notes)
    index = json.loads((tmp_path / "build" / "index.json").read_text())
    assert any("symbolic links" in note for note in index["notes"])


def test_ffpp_method_folder_linked_from_another_disk(ffpp_tree, tmp_path):
    root, splits = ffpp_tree
    method = root / "manipulated_sequences" / "Deepfakes"
    moved = tmp_path / "other-disk" / "Deepfakes"
    moved.parent.mkdir()
    method.rename(moved)
    method.symlink_to(moved, target_is_directory=True)
    report = run_index(load_manifest("ffpp-c23"), root, tmp_path / "build", splits)
    rows = read_rows(tmp_path / "build")
    assert report.videos == 50
    assert "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4" in rows
    assert any(note.startswith("10 videos are reached through symbolic links") for note in report.notes)


def test_a_dangling_link_is_indexed_and_extract_reports_it_missing(tmp_path):
    from ffx.pipeline.stages.extract import run_extract

    root = tmp_path / "data"
    touch(root, "real/a.mp4")
    (root / "fake").mkdir()
    (root / "fake" / "gone.mp4").symlink_to(tmp_path / "unmounted" / "gone.mp4")
    report = run_index(load_manifest("folder"), root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert rows["fake/gone.mp4"]["size_bytes"] == -1 and rows["real/a.mp4"]["size_bytes"] == 1
    assert any("1 videos are links to missing files" in note for note in report.notes)
    run_extract(tmp_path / "build", workers=1, show_progress=False)
    frames = pq.read_table(tmp_path / "build" / "frames.parquet").to_pylist()
    assert {row["status"] for row in frames if row["key"] == "fake__gone"} == {"missing"}


def test_lists_accept_a_dangling_link_and_normalise_paths_inside_the_root(tmp_path):
    root = tmp_path / "data"
    touch(root, "vids/b.mp4")
    (root / "vids" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (root / "datalist.txt").write_text("vids/sub/../b.mp4 0\n./vids//gone.mp4 1\n")
    run_index(load_manifest("mcx-api-datalist"), root, tmp_path / "build")
    rows = read_rows(tmp_path / "build")
    assert set(rows) == {"vids/b.mp4", "vids/gone.mp4"}
    assert rows["vids/b.mp4"]["key"] == "vids__b" and rows["vids/gone.mp4"]["size_bytes"] == -1


def test_absolute_listed_paths_inside_the_root_by_another_name(tmp_path):
    """The root is resolved; a list may name it through a link to it, or through a linked
    folder inside it; a path that leaves it lexically is refused, wherever a link would lead."""
    real_root, alias = tmp_path / "real-root", tmp_path / "alias"
    touch(real_root, "v/a.mp4")
    touch(tmp_path, "elsewhere/c.mp4")
    (real_root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    alias.symlink_to(real_root, target_is_directory=True)
    (real_root / "datalist.txt").write_text(f"{alias}/v/a.mp4 0\n{real_root}/linked/c.mp4 1\n")
    run_index(load_manifest("mcx-api-datalist"), alias, tmp_path / "build")
    assert set(read_rows(tmp_path / "build")) == {"v/a.mp4", "linked/c.mp4"}
    for listed in (
        f"{tmp_path}/elsewhere/c.mp4",
        f"{real_root}/linked/../../elsewhere/c.mp4",
        "v/../../x.mp4",
    ):
        (real_root / "datalist.txt").write_text(f"{listed} 0\n")
        with pytest.raises(InputError, match=r"datalist\.txt:1: path escapes the root"):
            run_index(load_manifest("mcx-api-datalist"), real_root, tmp_path / "build2")


@pytest.mark.parametrize("list_file", ["../secret.txt", "SECRET_ABSOLUTE", "a/../../secret.txt", ".."])
def test_the_list_file_must_lie_under_the_root(tmp_path, capsys, list_file):
    root = tmp_path / "data"
    touch(root, "a.mp4")
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    list_file = str(tmp_path / "secret.txt") if list_file == "SECRET_ABSOLUTE" else list_file
    path = recipe(
        tmp_path, f'layout = {{ kind = "mcx-api-datalist", list_file = {json.dumps(list_file)} }}\n'
    )
    assert main(["index", str(path), "--root", str(root), "--build", str(tmp_path / "build")]) == 1
    line = one_error_line(capsys)
    assert line.endswith("give a path relative to it, without ../") and "layout.list_file" in line
    assert "TOPSECRET" not in line


def test_a_list_file_below_the_root_through_dots_is_read(tmp_path):
    root = tmp_path / "data"
    touch(root, "a.mp4")
    touch(root, "lists/datalist.txt", b"a.mp4 0\n")
    manifest = load_manifest("mcx-api-datalist", assignments=['layout.list_file="lists/x/../datalist.txt"'])
    assert run_index(manifest, root, tmp_path / "build").videos == 1
    inside = load_manifest("mcx-api-datalist", assignments=[f'layout.list_file="{root}/lists/datalist.txt"'])
    assert run_index(inside, root, tmp_path / "build2").videos == 1


def test_celebdf_test_list_and_dfdc_parts_stay_under_the_root(tmp_path):
    root = tmp_path / "data"
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    for folder in ("Celeb-real", "YouTube-real", "Celeb-synthesis"):
        (root / folder).mkdir(parents=True)
    celebdf = load_manifest("celebdf-v2", assignments=['layout.test_list="../secret.txt"'])
    with pytest.raises(InputError, match=r"layout.test_list = '\.\./secret.txt' is not under") as caught:
        run_index(celebdf, root, tmp_path / "build")
    assert "TOPSECRET" not in str(caught.value)
    dfdc = load_manifest("dfdc", assignments=['layout.parts="../*"'])
    with pytest.raises(InputError, match=r"layout.parts = '\.\./\*': give a glob of folders under the root"):
        run_index(dfdc, root, tmp_path / "build")


def test_a_list_that_is_not_text_is_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    touch(root, "a.mp4")
    touch(root, "datalist.txt", b"\xff\xfe\x00binary\x80")
    path = recipe(tmp_path, 'layout = { kind = "mcx-api-datalist" }\n')
    assert main(["index", str(path), "--root", str(root), "--build", str(tmp_path / "build")]) == 1
    assert "datalist.txt: not a UTF-8 text list" in one_error_line(capsys)


# ---------------------------------------------------------------- CSV headers (item 9)


@pytest.mark.parametrize("header", ["Path,Label", " PATH , label ", "path,LABEL,Split,Group"])
def test_csv_header_in_any_case(tmp_path, header):
    root = tmp_path / "data"
    touch(root, "v0.mp4")
    touch(root, "v1.mp4")
    (root / "videos.csv").write_text(f"{header}\nv0.mp4,real\nv1.mp4,fake\n")
    run_index(load_manifest("csv"), root, tmp_path / "build")
    assert {path: row["label_name"] for path, row in read_rows(tmp_path / "build").items()} == {
        "v0.mp4": "real",
        "v1.mp4": "fake",
    }


def test_no_link_loop_hangs_the_scan(tmp_path):
    root = tmp_path / "data"
    touch(root, "real/a.mp4")
    os.symlink("../fake", root / "real" / "to-fake")
    touch(root, "fake/b.mp4")
    os.symlink("../real", root / "fake" / "to-real")
    run_index(load_manifest("folder"), root, tmp_path / "build")
    assert set(read_rows(tmp_path / "build")) >= {"real/a.mp4", "fake/b.mp4"}
