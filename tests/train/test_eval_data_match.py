"""Issue 26.2: `ffx eval` compares the data it scores with the data the checkpoint was trained on
(the recipes of the two builds): a crop smaller than the model's input is refused in one line,
any other difference is listed in metrics.json and said as a note, never silent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ffx.cli import main
from ffx.model.mcx_api import MCXAPI, ModelConfig
from ffx.pipeline.stages.shard import run_shard
from ffx.train.config import TrainConfig
from ffx.train.state import save_run_checkpoint
from tests.generated import make_cropped_build


def sharded(folder: Path, crop_size: int | None = None) -> Path:
    """A build's shards; its recipe's crop.size set to `crop_size` (what the crops were cut at)."""
    build = make_cropped_build(folder, videos_per_label=4, frames=2, side=48)
    run_shard(build, workers=1, show_progress=False)
    if crop_size is not None:
        manifest = build / "manifest.toml"
        text = manifest.read_text()
        section = text.index("[crop]")
        tail = re.sub(r"\nsize = \d+", f"\nsize = {crop_size}", text[section:], count=1)
        manifest.write_text(text[:section] + tail)
    return build / "shards"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("trained")
    shards = sharded(folder / "build", 48)
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=2))
    save_run_checkpoint(
        folder / "run", "last.safetensors", model, TrainConfig(crop=32, shards=str(shards)), 0
    )
    return folder / "run" / "last.safetensors", shards


def eval_args(checkpoint: Path, shards: Path, out: Path, *more: str) -> list[str]:
    return [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--shards",
        str(shards),
        "--split",
        "train",
        "--out",
        str(out),
        *more,
    ]


def test_the_same_recipe_gives_no_difference(checkpoint, tmp_path: Path) -> None:
    model, shards = checkpoint
    assert main(eval_args(model, shards, tmp_path / "eval", "--workers", "1")) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["data_differences"] == {str(shards): []}


def test_another_crop_size_is_listed_and_said(checkpoint, tmp_path: Path, capsys) -> None:
    model, _ = checkpoint
    shards = sharded(tmp_path / "other", 96)
    assert main(eval_args(model, shards, tmp_path / "eval", "--workers", "1")) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["data_differences"] == {str(shards): [{"field": "crop.size", "trained": 48, "scored": 96}]}
    assert f"{shards}: crop.size is 96, the checkpoint was trained on 48" in metrics["notes"]
    assert "crop.size is 96" in capsys.readouterr().out


def test_crops_smaller_than_the_input_are_refused_in_one_line(checkpoint, tmp_path: Path, capsys) -> None:
    model, shards = checkpoint  # 48-px crops
    assert main(eval_args(model, shards, tmp_path / "eval", "--workers", "1", "--crop", "64")) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "its crops are 48 px, smaller than the 64 px input" in error, (
        error
    )


@pytest.mark.parametrize("crop", ["0", "-5"])
def test_a_crop_below_8_is_refused_by_the_command_line(checkpoint, tmp_path: Path, crop: str) -> None:
    model, shards = checkpoint
    assert main(eval_args(model, shards, tmp_path / "eval", "--crop", crop)) == 2


def test_imported_crops_and_older_checkpoints_are_compared_on_what_both_record() -> None:
    from ffx.train.data_match import recipe_differences

    trained = {
        "known": True,
        "recipe": "ffpp-c23",
        "sampling": "first:30",
        "spaces": ["rgb"],
        "crop": {"size": 320},
    }
    imported = {
        "known": True,
        "recipe": "crops-deepfakebench",
        "sampling": "all",
        "spaces": ["rgb"],
        "crop": {"size": 512},
    }
    # The import's crop settings are defaults, not how its crops were cut: not compared.
    assert recipe_differences(trained, imported) == [
        {"field": "sampling", "trained": "first:30", "scored": "all"}
    ]
    older = {
        "known": True,
        "recipe": "ffpp-c23",
        "spaces": ["rgb"],
        "crop": {},
    }  # recorded no sampling, no size
    assert recipe_differences(older, trained) == []
