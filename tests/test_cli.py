"""The CLI: thin commands, one-line errors with non-zero exits, --version and --help."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ffx import __version__
from ffx.cli import main


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ffx {__version__}"
    assert main(["index", "--help"]) == 0
    assert "--splits" in capsys.readouterr().out


def test_index_and_status(ffpp_tree, tmp_path, capsys):
    root, splits = ffpp_tree
    build = tmp_path / "build"
    args = ["index", "ffpp-c23", "--root", str(root), "--build", str(build), "--splits", str(splits)]
    assert main([*args, "--set", "seed=3"]) == 0
    assert "indexed 50 videos" in capsys.readouterr().out
    assert pq.read_metadata(build / "videos.parquet").num_rows == 50
    assert "seed = 3" in (build / "manifest.toml").read_text()
    assert main(["status", str(build)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "30" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "nope", "--root", "R", "--build", "B"], "no manifest file or recipe named 'nope'"),
        (["index", "folder", "--root", "/nonexistent", "--build", "B"], "dataset root not found"),
        (["status", "/nonexistent"], "not a build directory"),
    ],
)
def test_errors_are_one_line_and_non_zero(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FFX_DEBUG", raising=False)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("ffx: error:") and "Traceback" not in err


def test_demo(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    rows = pq.read_table(tmp_path / "demo/build/videos.parquet").to_pylist()
    assert len(rows) == 12
    assert {row["label_name"] for row in rows} == {"real", "fake"}
    frames = pq.read_table(tmp_path / "demo/build/frames.parquet").to_pylist()
    assert len(frames) == 12 * 30 and {row["status"] for row in frames} == {"ok"}
    faces = pq.read_table(tmp_path / "demo/build/faces.parquet").to_pylist()
    assert len(faces) == 12 * 30 and {row["status"] for row in faces} == {"ok"}
    assert {row["track"] for row in faces} == {0} and all(row["prob"] > 0.99 for row in faces)
    out = capsys.readouterr().out
    assert "demo build" in out and "this run: videos ok 12; frames ok 360 (360 written)" in out
    assert "faces ok 360 (360 written)" in out
    index = json.loads((tmp_path / "demo/build/shards/index.json").read_text())
    assert sum(split["samples"] for split in index["splits"].values()) == 360
    assert {split: totals["samples"] for split, totals in index["splits"].items()} == {
        split: 30 * sum(1 for row in rows if row["split"] == split) for split in index["splits"]
    }
    record = json.loads((tmp_path / "demo/build/build.json").read_text())
    assert record["shards"] == {entry["name"]: entry["sha256"] for entry in index["shards"]}
    assert record["inputs"]["files"] == 12 and record["inputs"]["missing"] == 0
    assert set(record["seconds"]) == {"frames", "faces", "samples", "shards"}

    # `ffx build` over the finished demo build: every stage finds its work done, nothing changes.
    shards = {path.name: path.read_bytes() for path in (tmp_path / "demo/build/shards").glob("*.tar")}
    arguments = [
        "build",
        "demo",
        "--root",
        str(tmp_path / "demo/data"),
        "--build",
        str(tmp_path / "demo/build"),
    ]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert out.count("12 already current") == 3 and "shards written" not in out
    assert {path.name: path.read_bytes() for path in (tmp_path / "demo/build/shards").glob("*.tar")} == shards
    assert main(["verify", str(tmp_path / "demo/build")]) == 0


def test_usage_errors_exit_2_with_a_message_not_a_traceback(capsys):
    assert main(["index", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-option" in err and "Traceback" not in err
