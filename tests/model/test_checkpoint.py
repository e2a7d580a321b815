"""A checkpoint describes itself (issue 13): its safetensors metadata holds everything needed to
apply it elsewhere, the data recipe of the build it was trained on included, and `ffx eval`
reads nothing of the run that trained it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ffx import __version__
from ffx.cli import main
from ffx.errors import FfxError
from ffx.model.checkpoint import RECIPE_CROP_FIELDS, data_recipe, describe_checkpoint, load_model
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.shard import run_shard
from ffx.train.config import make_config
from ffx.train.loop import train
from tests.generated import make_cropped_build

TINY = {
    "backbone": "test_convnext",
    "crop": 40,
    "classes_per_batch": 2,
    "images_per_class": 2,
    "workers": 0,
    "epochs": 1,
    "steps_per_epoch": 1,
    "freeze_epochs": 0,
}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    build = make_cropped_build(tmp_path_factory.mktemp("checkpoint"), videos_per_label=3, frames=2)
    run_shard(build, spaces=["rgb", "ycbcr"], max_count=8, workers=1, show_progress=False)
    return build


@pytest.fixture(scope="module")
def checkpoint(build: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    config = make_config(shards=str(build / "shards"), run=str(run), spaces="rgb,ycbcr", **TINY)
    train(config, show_progress=False, warn=lambda _text: None)
    return run / "last.safetensors"


def test_the_metadata_round_trip_gives_every_field(build: Path, checkpoint: Path) -> None:
    described = describe_checkpoint(checkpoint)
    manifest = load_manifest(build / "manifest.toml")
    index = json.loads((build / "index.json").read_text())
    assert described["checkpoint"] == str(checkpoint)
    assert described["ffx_version"] == __version__ and described["step"] == 1
    assert (described["backbone"], described["head"]) == ("test_convnext", "pairwise")
    assert (described["num_classes"], described["hidden"], described["dropout"]) == (2, 512, 0.5)
    assert described["spaces"] == ["rgb", "ycbcr"] and described["channels"] == 6
    assert described["crop"] == 40
    # No pretrained weights: the neutral normalisation, one value per input channel.
    assert described["mean"] == [0.5] * 6 and described["std"] == [0.5] * 6
    assert described["normalise"] == "(x / 255 - mean) / std"
    # The folder layout names its classes by folder: real (0) and fake (1).
    assert described["class_names"] == ["real", "fake"]
    assert described["classes"] == [
        {"label": 0, "name": "real", "real": True},
        {"label": 1, "name": "fake", "real": False},
    ]
    recipe = described["data_recipe"]
    assert recipe == {
        "known": True,
        "build": build.name,
        "recipe": manifest.name,
        "recipe_sha256": manifest.digest(),
        "dataset": index["dataset"],
        "split_method": index["split_method"],
        "sampling": manifest.sampling,
        "crop": {name: getattr(manifest.crop, name) for name in RECIPE_CROP_FIELDS},
        "spaces": list(manifest.spaces),
        "labels": manifest.labels.mode,
    }
    assert recipe["recipe_sha256"] == index["manifest_sha256"] and recipe["split_method"]
    assert set(recipe["crop"]) == {
        "preset", "size", "scale", "min_prob", "track_min_prob", "detect_max_side", "min_face_ratio",
        "all_faces", "boxes_from_original",
    }  # fmt: skip
    assert described["training"]["shards"] == str(build / "shards")
    assert described["training"]["crop"] == 40 and described["training"]["spaces"] == ["rgb", "ycbcr"]
    # The raw metadata: JSON strings any safetensors reader gets, without ffx.
    with safe_open(str(checkpoint), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["data_recipe"]) == recipe
    assert json.loads(metadata["input"]) == {
        key: described[key] for key in ("spaces", "channels", "crop", "mean", "std", "normalise", "colour_on")
    }
    assert described["colour_on"] == "host"  # auto on a CPU: the loader's workers convert
    assert json.loads(metadata["class_names"]) == ["real", "fake"]
    assert metadata["ffx_version"] == __version__
    # best.safetensors carries the same description (another step's weights at most).
    best = checkpoint.with_name("best.safetensors")
    if best.is_file():
        assert describe_checkpoint(best)["data_recipe"] == recipe


def test_shards_without_a_build_record_an_unknown_recipe(build: Path, tmp_path: Path) -> None:
    shards = build / "shards"
    assert data_recipe(str(shards / "train-*.tar"))["known"]  # a pattern inside a build: its build
    assert data_recipe("https://example.org/shards/train-{000000..000003}.tar") == {
        "known": False,
        "reason": "the shards come from a URL pattern without a build "
        "(https://example.org/shards/train-{000000..000003}.tar)",
    }
    loose = tmp_path / "copied" / "shards"
    shutil.copytree(shards, loose)  # shards alone, out of their build
    found = data_recipe(str(loose))
    assert not found["known"] and "no manifest.toml" in found["reason"]
    pattern = str(loose / "train-*.tar")
    run = tmp_path / "run"
    config = make_config(shards=pattern, run=str(run), classes=2, **TINY)
    train(config, show_progress=False)
    described = describe_checkpoint(run / "last.safetensors")
    assert not described["data_recipe"]["known"] and "no manifest.toml" in described["data_recipe"]["reason"]
    assert described["backbone"] == "test_convnext" and described["crop"] == 40


def test_eval_reads_the_checkpoint_alone(build: Path, checkpoint: Path, tmp_path: Path) -> None:
    """The run's config.json and training shards gone, a copy of the checkpoint is evaluated on
    a copy of the build: crop and spaces come from its metadata."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "model.safetensors"
    shutil.copy(checkpoint, moved)
    data = tmp_path / "other" / build.name
    shutil.copytree(build, data)
    training_shards = tmp_path / "training-shards"
    shutil.move(str(build / "shards"), training_shards)  # the path in the metadata leads nowhere
    try:
        out = tmp_path / "eval"
        arguments = ["eval", "--checkpoint", str(moved), "--shards", str(data / "shards"), "--split", "train"]
        assert main([*arguments, "--out", str(out), "--device", "cpu", "--workers", "1"]) == 0
    finally:
        shutil.move(str(training_shards), build / "shards")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["crop"] == 40
    assert metrics["trained_on"] == describe_checkpoint(checkpoint)["data_recipe"]
    assert not (elsewhere / "config.json").exists()


def test_an_older_checkpoint_is_described_from_what_it_has(checkpoint: Path, tmp_path: Path) -> None:
    with safe_open(str(checkpoint), "pt") as handle:
        metadata = handle.metadata()
    older = tmp_path / "older.safetensors"
    kept = {key: metadata[key] for key in ("model", "train", "step")}  # before class names, input, recipe
    save_file(load_file(str(checkpoint)), str(older), metadata=kept)
    described = describe_checkpoint(older)
    assert described["crop"] == 40 and described["spaces"] == ["rgb", "ycbcr"]  # from `train`
    assert described["class_names"] == ["class0", "class1"]
    assert [entry["real"] for entry in described["classes"]] == [True, False]  # class 0, as ffx eval
    assert described["data_recipe"] == {
        "known": False,
        "reason": "the checkpoint was written before ffx recorded the data recipe",
    }
    assert described["ffx_version"] is None
    load_model(older)  # the weights still load

    broken = tmp_path / "broken.safetensors"
    save_file(load_file(str(checkpoint)), str(broken), metadata=metadata | {"data_recipe": "{not json"})
    with pytest.raises(FfxError, match="'data_recipe' entry of its metadata is unreadable"):
        describe_checkpoint(broken)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(FfxError, match="is empty: not a checkpoint"):
        describe_checkpoint(tmp_path / "empty.safetensors")
