"""The CLI: thin commands, one-line errors with non-zero exits, --version and --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import typer

from ffx import __version__
from ffx.cli import app, main
from ffx.pipeline.recipe.manifest import Extract, Manifest
from ffx.train.config import TrainConfig
from tests.conftest import REPO

CLI = REPO / "ffx" / "cli"


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


def option_help(command: str) -> dict[str, str]:
    """Each option of `ffx COMMAND` and its help text, as `--help` shows it."""
    params = typer.main.get_command(app).commands[command].params
    return {param.opts[0]: param.help or "" for param in params}


def test_help_shows_the_defaults_of_the_settings():
    trained, recipe, extract = TrainConfig(), Manifest.model_fields["sampling"].default, Extract()
    helps = option_help("train")
    for option, shown in {
        "--backbone": f"({trained.backbone})",
        "--classes-per-batch": f"P ({trained.classes_per_batch})",
        "--images-per-class": f"K ({trained.images_per_class})",
        "--lr": f"({trained.lr})",
        "--crop": f"({trained.crop};",
        "--freeze-epochs": f"({trained.freeze_epochs})",
        "--flip": f"(default: {'on' if trained.flip else 'off'})",
    }.items():
        assert shown in helps[option], (option, helps[option])
    helps = option_help("extract")
    assert f"`sampling` ({recipe})" in helps["--sample"]
    assert f"`extract.backends` ({','.join(extract.backends)})" in helps["--backend"]
    assert f"`extract.png_level` ({extract.png_level})" in helps["--png-level"]


def test_help_follows_a_changed_default():
    """A default changed in TrainConfig shows in `ffx train --help`: no number is repeated by hand."""
    script = (
        "from ffx.train.config import TrainConfig; "
        "TrainConfig.__dataclass_fields__['crop'].default = 321; "
        "from ffx.cli import main; main(['train', '--help'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    assert "Training crop side (321;" in done.stdout


def test_the_command_line_stays_thin():
    """Importing the CLI loads no heavy library (`ffx --help` stays fast); each command group module
    is short and says its role in its first line."""
    heavy = ("torch", "pyarrow", "cv2", "numpy", "pydantic")
    script = f"import sys, ffx.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    for module in CLI.glob("*.py"):
        lines = module.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= 450, module.name
        assert lines[0].startswith('"""') and lines[0].endswith('"""'), module.name
