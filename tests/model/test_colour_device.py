"""Issue 14, colour on the device and smaller shards: `ffx.model.colour.rgb_to_spaces` against
`color.convert` on all 2^24 RGB values; the loader and trainer with `colour_on` device and host;
shards that store rgb.png alone (`[shard] stored_spaces = "rgb"`)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from ffx.data import Decoder, ShardSet, check_spaces, open_shards, resolve_colour_on, shard_dataset
from ffx.errors import BuildError, FfxError
from ffx.model import colour
from ffx.model.checkpoint import describe_checkpoint
from ffx.model.colour import rgb_to_spaces
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.media import color
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.shard import SampleStage, run_shard
from ffx.train.config import make_config
from ffx.train.evaluate import evaluate_checkpoint
from ffx.train.loop import train
from ffx.train.state import LAST

CHUNK = 1 << 21  # RGB values per comparison: 8 chunks cover all 2^24


def every_rgb(start: int, count: int) -> np.ndarray:
    """RGB values start .. start + count - 1 (R the high byte), as a 1024-row H x W x 3 image."""
    values = np.arange(start, start + count, dtype=np.uint32)
    rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], -1).astype(np.uint8)
    return rgb.reshape(1024, -1, 3)


def differences(space: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel over all 2^24 RGB values: the largest difference between `rgb_to_spaces`
    and `color.convert` (hue circularly: 255 and 0 are 1 apart), and how many values differ."""
    largest, differing = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for start in range(0, 1 << 24, CHUNK):
        image = every_rgb(start, CHUNK)
        expected = color.convert(image, space).astype(np.int16)
        batch = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
        got = rgb_to_spaces(batch, [space])[0].permute(1, 2, 0).numpy().astype(np.int16)
        apart = np.abs(got - expected).reshape(-1, 3)
        if space == "hsv":
            apart[:, 0] = np.minimum(apart[:, 0], 256 - apart[:, 0])
        largest = np.maximum(largest, apart.max(0))
        differing += (apart > 0).sum(0)
    return largest, differing


@pytest.mark.parametrize("space", ["lab", "hsv", "ycbcr"])
def test_every_rgb_value_converts_as_the_host_does(space: str) -> None:
    # Measured: no value differs in any space (the spec allows 1): the same integer paths as
    # OpenCV for HSV and YCbCr, and OpenCV's own Lab table, interpolated as it does.
    largest, differing = differences(space)
    assert largest.tolist() == [0, 0, 0] and differing.tolist() == [0, 0, 0], (largest, differing)


def test_grey_and_corner_values_as_opencv_defines_them() -> None:
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)[None]  # 1 x 256 x 3
    batch = torch.from_numpy(greys).permute(2, 0, 1).unsqueeze(0)
    hsv = rgb_to_spaces(batch, "hsv")[0]
    assert hsv[0].eq(0).all() and hsv[1].eq(0).all()  # grey: hue 0, saturation 0
    assert torch.equal(hsv[2, 0], torch.arange(256, dtype=torch.uint8))
    corners = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    got = rgb_to_spaces(torch.from_numpy(corners).permute(2, 0, 1).unsqueeze(0), "lab,hsv")[0]
    assert got[3:, 0].T.tolist() == [[0, 255, 255], [85, 255, 255], [171, 255, 255], [0, 0, 255]]
    assert got[:3, 0, 3].tolist() == [255, 128, 128]  # white: L* 100, a* 0, b* 0


def test_batches_stack_the_spaces_in_order_whatever_the_layout() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    spaces = ("ycbcr", "rgb", "lab", "hsv")
    expected = np.stack([np.concatenate([color.convert(im, s) for s in spaces], -1) for im in images])
    # (N, H, W, 3) memory seen as (N, 3, H, W): the loader's channels-last batches.
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    got = rgb_to_spaces(batch, spaces)
    assert got.dtype == torch.uint8 and got.shape == (4, 12, 20, 24)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), expected)
    assert torch.equal(rgb_to_spaces(batch.contiguous(), spaces), got)
    assert rgb_to_spaces(batch, ["rgb"]) is batch
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_spaces(batch.float(), spaces)
    with pytest.raises(ValueError, match="colour spaces rgb,xyz"):
        rgb_to_spaces(batch, "rgb,xyz")
    assert colour.SPACES == color.SPACES


def test_the_lab_table_without_opencv_is_close(monkeypatch) -> None:
    """A machine with torch alone computes the table; it is one step (2^-14) off OpenCV's in few
    entries, and the 8-bit Lab of 2^21 RGB values stays within 1 of the host's."""
    opencv = colour._lab_table()
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # `import cv2` fails
    computed = colour._lab_table()
    apart = np.abs(computed.astype(np.int64) - opencv)
    assert apart.max() == 1 and 0 < (apart > 0).sum() < 200  # measured: 89 of 107 811 entries
    monkeypatch.setattr(colour, "_tables", {})
    image = every_rgb(0x5A0000, CHUNK)
    got = rgb_to_spaces(torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0), "lab")[0]
    monkeypatch.undo()
    off = np.abs(got.permute(1, 2, 0).numpy().astype(np.int16) - color.convert(image, "lab"))
    assert off.max() <= 1


# ---------------------------------------------------------------- loader, trainer, rgb-only shards

SPACES4 = ("rgb", "lab", "hsv", "ycbcr")
TINY = {"backbone": "test_convnext", "crop": 32, "classes_per_batch": 2, "images_per_class": 2}


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory) -> tuple[Path, Path]:
    """The same crops sharded twice: every space stored, and rgb.png alone."""
    from tests.generated import make_cropped_build

    folders = []
    for stored in ("all", "rgb"):
        build = make_cropped_build(tmp_path_factory.mktemp(stored), videos_per_label=4, frames=3)
        run_shard(build, spaces=list(SPACES4), stored_spaces=stored, max_count=8, show_progress=False)
        folders.append(build / "shards")
    return folders[0], folders[1]


def _members(shards: Path) -> set[str]:
    names = set()
    for path in sorted(shards.glob("train-*.tar")):
        with tarfile.open(path) as archive:
            names |= {name.split(".", 1)[1] for name in archive.getnames()}
    return names


def test_rgb_only_shards_decode_to_the_same_tensors(two_builds: tuple[Path, Path]) -> None:
    full, rgb_only = two_builds
    assert _members(full) == {"cls", "json", "rgb.png", "lab.png", "hsv.png", "ycbcr.png"}
    assert _members(rgb_only) == {"cls", "json", "rgb.png"}
    index = json.loads((rgb_only / "index.json").read_text())
    assert index["settings"]["spaces"] == list(SPACES4) and index["settings"]["stored"] == ["rgb"]
    assert index["settings"]["stored_spaces"] == "rgb"
    assert open_shards(rgb_only, "train").stored == ("rgb",)
    assert open_shards(full, "train").stored == SPACES4
    full_bytes = sum(path.stat().st_size for path in full.glob("*.tar"))
    rgb_bytes = sum(path.stat().st_size for path in rgb_only.glob("*.tar"))
    assert rgb_bytes < 0.5 * full_bytes
    # Random crops and flips of every sample, on the host: the very same bytes from both builds.
    decoder = Decoder(SPACES4, 32, True, seed=5, flip=True)
    samples = {
        name: {s["__key__"]: s for s in shard_dataset(shards, "train", decode=False)}
        for name, shards in (("full", full), ("rgb", rgb_only))
    }
    assert (
        samples["full"].keys() == samples["rgb"].keys()
        and len(samples["full"]) == open_shards(full, "train").samples
    )
    for key, sample in samples["full"].items():
        expected = decoder.decode(sample)["image"]
        assert torch.equal(decoder.decode(samples["rgb"][key])["image"], expected)
        # The colour on the device: RGB decoded, the spaces made by torch, equal again.
        rgb = Decoder(("rgb",), 32, True, seed=5, flip=True).decode(samples["rgb"][key])["image"]
        assert torch.equal(rgb_to_spaces(rgb.unsqueeze(0), SPACES4)[0], expected)
    # A pipeline with the colour on the device decodes RGB alone.
    first = next(iter(shard_dataset(rgb_only, "val", SPACES4, 32, colour_on="device")))
    assert first["image"].shape == (3, 32, 32)


def test_the_stored_spaces_are_part_of_what_samples_are_made_from(tmp_path: Path) -> None:
    from tests.generated import make_cropped_build

    build = make_cropped_build(tmp_path, videos_per_label=2, frames=2)
    recipe = load_manifest(build / "manifest.toml")
    plan = SampleStage().plan(BuildDir(build), recipe).made_from
    rgb_recipe = recipe.model_copy(update={"shard": recipe.shard.model_copy(update={"stored_spaces": "rgb"})})
    rgb_plan = SampleStage().plan(BuildDir(build), rgb_recipe).made_from
    assert plan.keys() == rgb_plan.keys() and all(plan[key] != rgb_plan[key] for key in plan)
    run_shard(build, spaces=list(SPACES4), show_progress=False)
    assert _members(build / "shards") >= {"lab.png", "hsv.png"}
    run_shard(build, stored_spaces="rgb", show_progress=False)  # redone: rgb.png alone
    assert _members(build / "shards") == {"cls", "json", "rgb.png"}
    assert json.loads((build / "shards" / "index.json").read_text())["settings"]["stored"] == ["rgb"]


def test_both_paths_train_alike_and_the_checkpoint_scores_the_same(
    two_builds: tuple[Path, Path], tmp_path: Path
) -> None:
    full, rgb_only = two_builds
    settings = dict(TINY, spaces=",".join(SPACES4), epochs=1, steps_per_epoch=1, freeze_epochs=0, workers=0)
    runs = {
        "full-host": (full, "host"),
        "rgb-host": (rgb_only, "host"),
        "rgb-device": (rgb_only, "device"),
    }
    for name, (shards, colour_on) in runs.items():
        config = make_config(shards=str(shards), run=str(tmp_path / name), colour_on=colour_on, **settings)
        train(config, show_progress=False)
        assert json.loads((tmp_path / name / "config.json").read_text())["colour_on"] == colour_on
    losses = {
        name: json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["loss"]
        for name in runs
    }
    assert len(set(losses.values())) == 1, losses  # the same first-step loss, to the bit
    weights = {name: load_file(str(tmp_path / name / LAST)) for name in runs}
    assert all(
        torch.equal(weights["full-host"][key], weights[name][key]) for name in runs for key in weights[name]
    )
    # The checkpoint says where its colour was made; `ffx eval` does the same, and the other
    # way scores the same.
    checkpoint = tmp_path / "rgb-device" / LAST
    assert describe_checkpoint(checkpoint)["colour_on"] == "device"
    scored = {}
    for colour_on in (None, "host"):
        out = tmp_path / f"eval-{colour_on}"
        result = evaluate_checkpoint(
            checkpoint, full, "val", workers=0, device="cpu", out=out, colour_on=colour_on
        )
        assert result["colour_on"] == (colour_on or "device")
        scored[colour_on] = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [row["sample"] for row in scored[None]] == [row["sample"] for row in scored["host"]]
    assert all(
        a["score"] == pytest.approx(b["score"], abs=1e-6) for a, b in zip(scored[None], scored["host"])
    )


def test_colour_on_errors_are_one_line(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    full, _ = two_builds
    with pytest.raises(FfxError, match="--colour-on must be auto, device, host, got 'gpu'"):
        make_config(shards=str(full), run=str(tmp_path / "r"), colour_on="gpu")
    shard_set = ShardSet(["x.tar"], 1, {0: 1}, ("lab", "ycbcr"), (1,), ("lab", "ycbcr"))
    with pytest.raises(BuildError, match=r"needs rgb\.png in the samples, which hold lab,ycbcr"):
        check_spaces(shard_set, ("lab",), "device", "BUILD/shards")
    check_spaces(shard_set, ("lab",), "host", "BUILD/shards")  # decoded from its PNG
    assert resolve_colour_on("auto", "cpu") == "host" and resolve_colour_on("auto", "cuda") == "device"
