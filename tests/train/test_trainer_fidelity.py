"""Issue 13, a faithful trainer: horizontal flips, epochs without replacement in one process (every
shard once, leftovers carried), any timm backbone, `--head linear`, the pretrained backbone's
normalisation, and `--resume` / `--init-from` that refuse what would not continue a run exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import ffx.data
from ffx.cli import main
from ffx.data import Decoder, decode_sample, open_shards, read_shards, shard_dataset
from ffx.model.checkpoint import Placement, load_model, normalise
from ffx.model.mcx_api import MCXAPI, LinearHead, ModelConfig, feature_width
from ffx.pipeline.stages.shard import run_shard
from ffx.train.batches import Carry, PassBatches, Short, interleave
from ffx.train.config import TrainConfig, make_config
from ffx.train.loop import TrainStep, train
from ffx.train.state import LAST, save_run_checkpoint
from ffx.train.stream import epoch_batches
from tests.assertions import fails_in_one_line
from tests.generated import make_cropped_build, make_shards, train_args

CPU = Placement(0, 1, torch.device("cpu"))
TINY = {"backbone": "test_convnext", "crop": 32, "classes_per_batch": 2, "images_per_class": 2}
# Five train shards of four samples (two per class), and a validation shard.
FIVE = {
    f"train-{number:06d}.tar": [
        (f"real_{number}a_0", 0),
        (f"real_{number}a_1", 0),
        (f"fake_{number}b_0", 1),
        (f"fake_{number}b_1", 1),
    ]
    for number in range(5)
} | {"val-000000.tar": [("real_v_0", 0), ("real_v_1", 0), ("fake_w_0", 1), ("fake_w_1", 1)]}


@pytest.fixture(scope="module")
def spaced(tmp_path_factory) -> Path:
    """Shards of rgb, lab and ycbcr crops (48 px): Lab is decoded from its own PNG."""
    build = make_cropped_build(tmp_path_factory.mktemp("spaced"), videos_per_label=6, frames=4)
    run_shard(build, spaces=["rgb", "lab", "ycbcr"], max_count=8, workers=2, show_progress=False)
    return build / "shards"


@pytest.fixture
def five(tmp_path: Path) -> Path:
    return make_shards(tmp_path / "build" / "shards", FIVE)


# ---------------------------------------------------------------- 1: horizontal flip


def test_a_flip_mirrors_every_colour_space_of_a_sample_alike(spaced: Path) -> None:
    spaces = ("rgb", "lab", "ycbcr")
    raw = list(shard_dataset(spaced, "train", spaces, decode=False))
    assert len(raw) >= 30
    flipping = Decoder(spaces, None, True, seed=7, flip=True)
    flipped = 0
    for sample in raw:
        plain = decode_sample(sample, spaces)["image"]
        image = flipping.decode(sample)["image"]
        if flipping.flips(sample["__key__"]):
            flipped += 1
            for space in range(len(spaces)):  # each space's three channels, mirrored alike
                block = slice(3 * space, 3 * space + 3)
                assert torch.equal(image[block], plain[block].flip(-1))
                assert not torch.equal(image[block], plain[block])
        else:
            assert torch.equal(image, plain)
    assert 0.3 < flipped / len(raw) < 0.7  # about half
    keys = [sample["__key__"] for sample in raw]
    again = Decoder(spaces, None, True, seed=7, flip=True)
    assert [flipping.flips(key) for key in keys] == [again.flips(key) for key in keys]  # seeded
    other = Decoder(spaces, None, True, seed=8, flip=True)
    assert [flipping.flips(key) for key in keys] != [other.flips(key) for key in keys]
    # The crop window is drawn as without flips: a flipped crop is the mirrored unflipped crop.
    cropping, unflipped = Decoder(spaces, 32, True, 7, flip=True), Decoder(spaces, 32, True, 7)
    for sample in raw[:10]:
        image, plain = cropping.decode(sample)["image"], unflipped.decode(sample)["image"]
        assert torch.equal(image, plain.flip(-1) if cropping.flips(sample["__key__"]) else plain)
    # Never at evaluation: no random crop, no flip, whatever `flip` says.
    evaluation = Decoder(spaces, 32, False, 7, flip=True)
    assert not any(evaluation.flips(key) for key in keys)
    centred = next(iter(shard_dataset(spaced, "val", spaces, 32, train=False, flip=True)))
    assert torch.equal(centred["image"], decode_sample(next(iter(_raw(spaced, "val"))), spaces, 32)["image"])


def _raw(shards: Path, split: str):
    return shard_dataset(shards, split, decode=False)


def test_training_batches_flip_about_half_and_the_run_records_it(five: Path, tmp_path: Path) -> None:
    config = make_config(shards=str(five), run=str(tmp_path / "r"), steps_per_epoch=5, workers=0, **TINY)
    assert config.flip
    batches = [item for item in epoch_batches(config, 0, CPU) if isinstance(item, dict)]
    decoder = Decoder(("rgb",), 32, True, seed=config.seed * 1_000_003, flip=True)
    keys = [key for batch in batches for key in batch["key"]]
    flips = [decoder.flips(key) for key in keys]
    assert len(keys) == 20 and 0 < sum(flips) < 20
    # The same batches again: the same crops and flips.
    again = [item for item in epoch_batches(config, 0, CPU) if isinstance(item, dict)]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, again))
    unflipped = [
        item
        for item in epoch_batches(make_config(**(vars(config) | {"flip": False})), 0, CPU)
        if isinstance(item, dict)
    ]
    for first, second in zip(batches, unflipped):
        assert first["key"] == second["key"]
        for image, plain, key in zip(first["image"], second["image"], first["key"]):
            assert torch.equal(image, plain.flip(-1) if decoder.flips(key) else plain)


# ---------------------------------------------------------------- 2: epochs without replacement


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, str]]:
    """(shard, key) of every sample read from a shard in this process (loader workers=0)."""
    seen: list[tuple[str, str]] = []

    def recording(sources):
        for sample in read_shards(sources):
            seen.append((Path(sample["__url__"]).name, sample["__key__"]))
            yield sample

    monkeypatch.setattr(ffx.data, "read_shards", recording)
    return seen


def test_one_process_reads_every_shard_once_per_epoch_in_a_seeded_order(
    five: Path, tmp_path: Path, reads: list
) -> None:
    config = make_config(shards=str(five), run=str(tmp_path / "r"), steps_per_epoch=2, workers=0, **TINY)
    orders = []
    for epoch in (0, 1, 0):
        reads.clear()
        items = list(epoch_batches(config, epoch, CPU))
        shards = list(dict.fromkeys(shard for shard, _ in reads))
        assert Counter(key for _, key in reads) == Counter(
            key for name, samples in FIVE.items() if name.startswith("train") for key, _ in samples
        )  # every sample of every shard read exactly once
        assert sorted(shards) == sorted(name for name in FIVE if name.startswith("train"))
        orders.append(shards)
        batches = [item for item in items if isinstance(item, dict)]
        assert len(batches) == 2 and isinstance(items[-1], Carry)  # the quota; the rest queued
    assert orders[0] != orders[1] and orders[0] == orders[2]  # new order each epoch; seeded
    other = make_config(**(vars(config) | {"seed": 1}))
    reads.clear()
    list(epoch_batches(other, 0, CPU))
    assert list(dict.fromkeys(shard for shard, _ in reads)) != orders[0]


def test_leftovers_are_carried_into_the_next_epoch(five: Path, tmp_path: Path) -> None:
    config = make_config(shards=str(five), run=str(tmp_path / "r"), steps_per_epoch=2, workers=0, **TINY)
    items = list(epoch_batches(config, 0, CPU))
    used = {key for item in items if isinstance(item, dict) for key in item["key"]}
    carry = items[-1]
    assert isinstance(carry, Carry) and carry.role == 0 and len(carry.samples) == 20 - 8
    urls = open_shards(five, "train").urls
    carried = {key for _, key in carry.samples}
    assert not carried & used and len(carried) == 12
    assert all(Path(urls[shard]).name in FIVE for shard, _ in carry.samples)
    nxt = [item for item in epoch_batches(config, 1, CPU, carried=(carry.samples,)) if isinstance(item, dict)]
    # Each class queue starts with its leftovers: the next epoch's first batches use them.
    assert set(nxt[0]["key"]) <= carried and set(nxt[1]["key"]) <= carried
    queued = {label: [key for _, key in carry.samples if key.startswith(label)] for label in ("real", "fake")}
    assert sorted(nxt[0]["key"]) == sorted(queued["real"][:2] + queued["fake"][:2])  # in queue order
    fresh = [item for item in epoch_batches(config, 1, CPU) if isinstance(item, dict)]
    assert [b["key"] for b in fresh] != [b["key"] for b in nxt]


def test_an_epoch_longer_than_its_pass_gives_short_batches(five: Path, tmp_path: Path) -> None:
    config = make_config(shards=str(five), run=str(tmp_path / "r"), steps_per_epoch=8, workers=0, **TINY)
    items = list(epoch_batches(config, 0, CPU))
    batches = [item for item in items if isinstance(item, dict)]
    assert len(batches) == 5 and sum(isinstance(item, Short) for item in items) == 3
    report = train(make_config(**(vars(config) | {"epochs": 1, "freeze_epochs": 0})), show_progress=False)
    assert report.step == 8 and report.metrics["short_batches"] == 3


def test_worker_roles_share_the_pass_and_resume_where_the_loader_was(five: Path, tmp_path: Path) -> None:
    config = make_config(shards=str(five), run=str(tmp_path / "r"), steps_per_epoch=4, workers=2, **TINY)
    items = list(epoch_batches(config, 0, CPU))
    batches = [item["key"] for item in items if isinstance(item, dict)]
    carries = sorted((item.role, item.samples) for item in items if isinstance(item, Carry))
    assert len(batches) == 4 and [role for role, _ in carries] == [0, 1]
    used = [key for batch in batches for key in batch]
    left = [key for _, samples in carries for _, key in samples]
    assert len(used) == len(set(used)) and not set(used) & set(left)
    assert len(used) + len(left) == 20  # every sample used or carried (no queue overflowed)
    for skip in range(1, 4):  # a resumed epoch goes on with the very batches it would have given
        resumed = [item["key"] for item in epoch_batches(config, 0, CPU, skip=skip) if isinstance(item, dict)]
        assert resumed == batches[skip:]


class _Roles(torch.utils.data.IterableDataset):
    """Worker role r (ids rotated by `shift`) gives role-tagged items own[r]..quota[r]."""

    def __init__(self, quotas, own, shift):
        self.quotas, self.own, self.shift = quotas, own, shift

    def __iter__(self):
        role = ffx.data.worker_role(self.shift)[0]
        for number in range(self.own[role], self.quotas[role]):
            yield role, number


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_interleave_follows_the_dataloader_turns() -> None:
    """What `interleave` assumes of a DataLoader: turns among its workers, passing over those done."""
    quotas = (3, 1, 2)
    loader = torch.utils.data.DataLoader(_Roles(quotas, (0, 0, 0), 0), batch_size=None, num_workers=3)
    order = [tuple(int(value) for value in item) for item in loader]
    assert sorted(order) == sorted((role, n) for role, quota in enumerate(quotas) for n in range(quota))
    for done in range(len(order)):
        own, shift = interleave(quotas, done)
        assert own == tuple(sum(1 for role, _ in order[:done] if role == r) for r in range(3))
        resumed = torch.utils.data.DataLoader(_Roles(quotas, own, shift), batch_size=None, num_workers=3)
        assert [tuple(int(value) for value in item) for item in resumed] == order[done:]
    assert interleave((None, None), 5) == ((3, 2), 1)


def test_pass_batches_fetch_carried_samples_from_their_shards(five: Path) -> None:
    urls = tuple(open_shards(five, "train").urls)
    carried = ((1, "real_1a_0"), (3, "fake_3b_1"), (1, "fake_1b_0"), (3, "real_3a_1"))
    stage = PassBatches(2, 2, 0, urls, (1,), (carried,))
    first = next(iter(stage(iter(()))))
    assert [sample["__key__"] for sample in first] in (
        ["real_1a_0", "real_3a_1", "fake_3b_1", "fake_1b_0"],
        ["fake_3b_1", "fake_1b_0", "real_1a_0", "real_3a_1"],
    )
    streamed = {s["__key__"]: s for s in read_shards([{"url": urls[1]}, {"url": urls[3]}])}
    for sample in first:  # the same members, bytes for bytes, as the stream gives
        assert sample.keys() == streamed[sample["__key__"]].keys()
        assert all(sample[name] == streamed[sample["__key__"]][name] for name in sample)


def test_resume_after_an_epoch_end_replays_the_carried_leftovers(five: Path, tmp_path: Path) -> None:
    settings = dict(shards=str(five), epochs=3, steps_per_epoch=2, freeze_epochs=0, workers=2, **TINY)
    train(make_config(run=str(tmp_path / "whole"), **settings), show_progress=False)
    train(make_config(run=str(tmp_path / "parts"), max_steps=2, **settings), show_progress=False)
    state = torch.load(tmp_path / "parts" / "last.state.pt", weights_only=True)
    assert state["carried"]["epoch"] == 1 and sum(len(role) for role in state["carried"]["roles"]) > 0
    train(
        make_config(run=str(tmp_path / "parts"), shards=str(five), max_steps=3),
        resume=True,
        show_progress=False,
    )
    train(make_config(run=str(tmp_path / "parts"), shards=str(five)), resume=True, show_progress=False)
    whole, parts = (load_file(str(tmp_path / name / LAST)) for name in ("whole", "parts"))
    assert all(torch.equal(whole[name], parts[name]) for name in whole)


# ---------------------------------------------------------------- 3: any timm backbone


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_050", "ghostnet_050", "resnet18"])
def test_the_head_is_as_wide_as_the_feature_the_backbone_returns(
    backbone: str, five: Path, tmp_path: Path
) -> None:
    model = MCXAPI(ModelConfig(backbone=backbone, spaces=("rgb",))).eval()
    with torch.no_grad():
        returned = model.backbone(torch.rand(2, 3, 32, 32))
    assert returned.shape == (2, feature_width(model.backbone)) == (2, model.width)
    assert model.head.classifier.in_features == returned.shape[1]
    assert model.head.mutual[0].in_features == 2 * returned.shape[1]
    if backbone != "resnet18":  # a head conv: the returned feature is wider than num_features
        assert returned.shape[1] > model.backbone.num_features
    settings = dict(TINY, backbone=backbone, epochs=1, steps_per_epoch=1, freeze_epochs=0, workers=0)
    report = train(make_config(shards=str(five), run=str(tmp_path / "run"), **settings), show_progress=False)
    assert report.step == 1 and np.isfinite(report.metrics["loss"])


# ---------------------------------------------------------------- 4: --head linear


def test_a_linear_head_trains_with_cross_entropy_and_reloads(five: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MCXAPI(ModelConfig(backbone="test_convnext", head="linear"))
    assert isinstance(model.head, LinearHead) and not hasattr(model.head, "mutual")
    step = TrainStep(model, TrainConfig(head="linear"))
    images, labels = torch.rand(8, 3, 32, 32), torch.tensor([0, 1] * 4)
    images[labels == 1, 0] += 0.5  # a difference to learn
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss, parts = step(images, labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert parts["rank"] == 0.0
        assert parts["cross_entropy"] == pytest.approx(losses[-1])
    assert losses[-1] < losses[0]
    # Trained by `ffx train`, recorded, and rebuilt by load_model with the same logits.
    run = tmp_path / "run"
    assert main(train_args(five, run, "--head", "linear", "--steps-per-epoch", "2")) == 0
    assert json.loads((run / "config.json").read_text())["head"] == "linear"
    with safe_open(str(run / LAST), "pt") as handle:
        assert json.loads(handle.metadata()["model"])["head"] == "linear"
    loaded = load_model(run / LAST)
    assert isinstance(loaded.head, LinearHead)
    save_run_checkpoint(tmp_path, "copy.safetensors", loaded, TrainConfig(head="linear"), 2)
    again = load_model(tmp_path / "copy.safetensors")
    probe = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(probe), again(probe))
        # The linear head is W x + b with the checkpoint's own tensors, read from the file.
        with safe_open(str(run / LAST), "pt") as handle:
            weight, bias = (
                handle.get_tensor("head.classifier.weight"),
                handle.get_tensor("head.classifier.bias"),
            )
        expected = loaded.backbone(probe) @ weight.T + bias
        assert torch.allclose(loaded(probe), expected, atol=1e-6)


def test_an_unknown_head_is_one_line(five: Path, tmp_path: Path, capfd) -> None:
    line = fails_in_one_line(train_args(five, tmp_path / "run", "--head", "triplet"), capfd)
    assert "'triplet'" in line and "pairwise or linear" in line


# ---------------------------------------------------------------- 5: normalisation


def test_normalisation_is_the_pretrained_backbones_or_a_half(spaced: Path, tmp_path: Path) -> None:
    settings = dict(TINY, backbone="resnet18", epochs=1, steps_per_epoch=1, freeze_epochs=0, workers=0)
    settings["spaces"] = "rgb,ycbcr"
    train(make_config(shards=str(spaced), run=str(tmp_path / "plain"), **settings), show_progress=False)
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert plain["mean"] == [0.5] * 6 and plain["std"] == [0.5] * 6
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), weights)
    run = tmp_path / "pretrained"
    train(
        make_config(shards=str(spaced), run=str(run), pretrained=str(weights), **settings),
        show_progress=False,
    )
    recorded = json.loads((run / "config.json").read_text())
    imagenet = timm.create_model("resnet18").pretrained_cfg
    assert recorded["mean"] == list(imagenet["mean"]) * 2 and recorded["std"] == list(imagenet["std"]) * 2
    with safe_open(str(run / LAST), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["train"])["mean"] == recorded["mean"]
    assert json.loads(metadata["model"])["std"] == recorded["std"]
    model = load_model(run / LAST)
    assert model.config.mean == tuple(recorded["mean"])
    # The normalisation itself, per channel: (x / 255 - mean) / std.
    images = torch.randint(0, 256, (2, 6, 4, 4), dtype=torch.uint8)
    normal = normalise(images, torch.device("cpu"), model.config.mean, model.config.std)
    mean, std = torch.tensor(recorded["mean"]), torch.tensor(recorded["std"])
    expected = (images.float() / 255 - mean.view(1, 6, 1, 1)) / std.view(1, 6, 1, 1)
    assert torch.allclose(normal, expected, atol=1e-5)
    # A run started from this checkpoint keeps its normalisation.
    start = dict(settings, init_from=str(run / LAST))
    train(make_config(shards=str(spaced), run=str(tmp_path / "next"), **start), show_progress=False)
    assert json.loads((tmp_path / "next" / "config.json").read_text())["mean"] == recorded["mean"]


# ---------------------------------------------------------------- 6: --resume and --init-from


def test_resume_refuses_changed_settings_and_takes_more_epochs(five: Path, tmp_path: Path, capfd) -> None:
    run = tmp_path / "run"
    assert main(train_args(five, run, "--epochs", "2")) == 0
    capfd.readouterr()
    for option, value, shown in (
        ("--lr", "0.5", "--lr 0.5 differs from the run's 0.01"),
        ("--spaces", "rgb,hsv", "--spaces rgb,hsv differs from the run's rgb"),
        ("--seed", "3", "--seed 3 differs from the run's 0"),
        ("--no-flip", None, "--flip False differs from the run's True"),
        ("--head", "linear", "--head linear differs from the run's pairwise"),
        ("--init-from", str(run / LAST), "--init-from"),
    ):
        arguments = train_args(five, run, "--epochs", "2", "--resume", option)
        line = fails_in_one_line(arguments + ([value] if value else []), capfd)
        assert shown in line and "--resume" in line, line
    line = fails_in_one_line(train_args(five, run, "--epochs", "1", "--resume"), capfd)
    assert "--epochs 1 is fewer than the 2" in line
    # The same settings again are no change; more epochs stretch the schedule, said in one line.
    assert main(train_args(five, run, "--epochs", "2", "--resume")) == 0  # done: nothing to do
    assert capfd.readouterr().err == ""
    assert main(train_args(five, run, "--epochs", "4", "--resume")) == 0
    lines = capfd.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1 and "--epochs 4 (the run had 2)" in lines[0] and "longer cosine schedule" in lines[0]
    )
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in metrics] == [0, 1, 2, 3]
    assert json.loads((run / "config.json").read_text())["epochs"] == 4
    assert main(train_args(five, run, "--resume")) == 1  # --epochs 1 of train_args: fewer
    capfd.readouterr()
    assert main(["train", "--shards", str(five), "--run", str(run), "--resume", "--epochs", "4"]) == 0


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(five: Path, tmp_path: Path, capfd) -> None:
    source = tmp_path / "source"
    assert main(train_args(five, source)) == 0
    start = source / LAST
    run = tmp_path / "run"
    assert main(train_args(five, run, "--init-from", str(start), "--lr", "0")) == 0
    before, after = load_file(str(start)), load_file(str(run / LAST))
    assert all(torch.equal(before[name], after[name]) for name in before)  # lr 0: the weights it got
    assert json.loads((run / "config.json").read_text())["init_from"] == str(start)
    capfd.readouterr()
    for option, value, named in (
        ("--backbone", "resnet18", "its backbone is test_convnext, this run's (--backbone) is resnet18"),
        ("--head", "linear", "its head is pairwise, this run's (--head) is linear"),
    ):  # the last of a repeated option counts
        arguments = train_args(five, tmp_path / f"bad{option}", "--init-from", str(start), option, value)
        line = fails_in_one_line(arguments, capfd)
        assert named in line and str(start) in line, line
    five_spaces = json.loads((five / "index.json").read_text())
    five_spaces["settings"]["spaces"] = ["rgb", "ycbcr"]  # ycbcr is computed from the RGB crops
    (five / "index.json").write_text(json.dumps(five_spaces))
    line = fails_in_one_line(
        train_args(
            five, tmp_path / "spaces", "--init-from", str(start), "--spaces", "rgb,ycbcr", "--no-verify"
        ),
        capfd,
    )
    assert "its spaces is rgb, this run's (--spaces) is rgb,ycbcr" in line
    pretrained = tmp_path / "backbone.pth"
    torch.save(MCXAPI(ModelConfig(backbone="test_convnext")).backbone.state_dict(), pretrained)
    line = fails_in_one_line(
        train_args(five, tmp_path / "both", "--init-from", str(start), "--pretrained", str(pretrained)), capfd
    )
    assert "give one of them" in line
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\0" * 64)
    line = fails_in_one_line(train_args(five, tmp_path / "garbage", "--init-from", str(garbage)), capfd)
    assert str(garbage) in line and "checkpoint" in line
    assert not (tmp_path / "garbage" / "shard-checks.json").exists()  # told before any hashing
