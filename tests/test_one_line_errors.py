"""Issue 26.7: what a new user types wrong is answered in one line that names the right cause,
never a traceback or a hint about something else."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffx.cli import main
from ffx.pipeline.recipe.manifest import ManifestError, load_manifest
from tests.assertions import fails_in_one_line, help_text
from tests.generated import make_shards, train_args

SLURM = ["slurm", "demo", "--root", "data", "--build", "build"]


@pytest.mark.parametrize(
    ("train_args", "said"),
    [
        ('--epochs "2', "--train-args '--epochs \"2': No closing quotation"),
        ("--epoch 2", "--train-args: No such option: --epoch"),
        ("--crop -5", "--train-args: Invalid value for '--crop'"),
        ("--lr abc", "--train-args: Invalid value for '--lr'"),
    ],
)
def test_slurm_train_args_are_checked_as_ffx_train_parses_them(
    tmp_path: Path, capfd, train_args: str, said: str
) -> None:
    arguments = [*SLURM, "--out", str(tmp_path / "jobs"), "--run", str(tmp_path / "run")]
    line = fails_in_one_line([*arguments, "--train-args", train_args], capfd)
    assert said in line, line
    assert not (tmp_path / "jobs" / "train.sbatch").exists()


def test_slurm_train_args_without_a_run_are_refused(tmp_path: Path, capfd) -> None:
    line = fails_in_one_line([*SLURM, "--out", str(tmp_path / "jobs"), "--train-args", "--epochs 2"], capfd)
    assert "--train-args needs --run" in line


def test_a_log_folder_that_cannot_exist_is_not_called_removed(tmp_path: Path, capfd) -> None:
    line = fails_in_one_line([*SLURM, "--out", str(tmp_path / "jobs"), "--logs", "/proc/nope"], capfd)
    assert "/proc/nope" in line and "a folder on its path does not exist" in line, line


def test_an_output_folder_that_is_a_file_is_said_so(tmp_path: Path, capfd) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    line = fails_in_one_line([*SLURM, "--out", str(taken)], capfd)
    assert str(taken) in line and "check the disk" not in line and "a file stands where a folder" in line


def test_a_set_of_a_layout_field_is_blamed_on_the_set_not_the_recipe() -> None:
    with pytest.raises(ManifestError) as raised:
        load_manifest("folder", assignments=['layout.label_folders=["../x"]'])
    assert str(raised.value).startswith('--set layout.label_folders=["../x"]: ')


def test_crop_size_limits_are_the_recipes() -> None:
    assert "32<=x<=2048" in help_text("crop").replace(" ", "")
    assert main(["crop", "build", "--size", "20"]) == 2  # refused by the command line, as --help says


def test_train_on_a_folder_without_an_index_says_so(tmp_path: Path, capfd) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = ["train", "--shards", str(empty), "--run", str(tmp_path / "run"), "--classes", "2"]
    arguments += [
        "--classes-per-batch",
        "2",
        "--steps-per-epoch",
        "1",
        "--backbone",
        "test_convnext",
        "--crop",
        "32",
    ]
    line = fails_in_one_line(arguments, capfd)
    assert f"{empty} is a folder without index.json" in line and "unreadable tar" not in line, line


def test_a_damaged_shards_index_is_not_blamed_on_the_shards_given(tmp_path: Path, capfd) -> None:
    shards = tmp_path / "build" / "shards"
    shards.mkdir(parents=True)
    (shards / "index.json").write_text("{not json")
    arguments = [
        "train",
        "--shards",
        str(shards),
        "--run",
        str(tmp_path / "run"),
        "--backbone",
        "test_convnext",
    ]
    line = fails_in_one_line(arguments, capfd)
    assert "not a readable shards index" in line and f"ffx shard {tmp_path / 'build'}" in line, line
    assert "give --shards" not in line


@pytest.mark.parametrize("name", ["last.state.pt", "last.rng-0.pt"])
def test_a_state_file_holding_pickled_objects_is_one_line(tmp_path: Path, capfd, name: str) -> None:
    import torch

    shards = make_shards(tmp_path / "build" / "shards")
    run = tmp_path / "run"
    assert main(train_args(shards, run)) == 0
    capfd.readouterr()
    torch.save({"step": Path("not a tensor")}, run / name)  # an object weights_only refuses
    line = fails_in_one_line(train_args(shards, run, "--epochs", "2", "--resume"), capfd)
    assert f"{run / name} is not a state file written by `ffx train`" in line, line
