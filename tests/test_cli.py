"""The CLI: thin commands, one-line errors with non-zero exits, --version and --help."""

from __future__ import annotations

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


def test_usage_errors_exit_2_with_a_message_not_a_traceback(capsys):
    assert main(["index", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-option" in err and "Traceback" not in err
