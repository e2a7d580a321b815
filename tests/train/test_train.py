"""`ffx train` / `ffx eval` on CPU with a tiny timm backbone and generated shards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ffx.cli import main
from ffx.data import SHARD_CHECKS
from ffx.errors import BuildError, FfxError
from ffx.model.checkpoint import load_model
from ffx.pipeline.stages.shard import run_shard
from ffx.train.config import make_config
from ffx.train.loop import train
from ffx.train.validate import evaluate
from tests.generated import LAYOUT, crop_pixels, make_cropped_build, make_shards

TINY = {"backbone": "test_convnext", "crop": 32, "classes_per_batch": 2, "images_per_class": 4, "workers": 0}


def tinted(key: str, frame_index: int, side: int) -> np.ndarray:
    """Fakes are redder than reals: a difference a tiny network learns in a few steps."""
    pixels = crop_pixels(key, frame_index, side).astype(np.int16)
    if key.startswith("fake"):
        pixels[..., 0] += 70
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    build = make_cropped_build(tmp_path_factory.mktemp("train"), videos_per_label=12, frames=4, pixels=tinted)
    run_shard(build, spaces=["rgb", "ycbcr"], max_count=16, workers=2, show_progress=False)
    return build / "shards"


def test_training_lowers_the_loss_and_beats_chance(shards: Path, tmp_path: Path, capsys) -> None:
    config = make_config(
        shards=str(shards),
        run=str(tmp_path / "run"),
        epochs=4,
        steps_per_epoch=6,
        freeze_epochs=1,
        lr=0.003,
        **TINY,
    )
    report = train(config, show_progress=False)
    assert report.step == report.total_steps == 24 and report.epochs_done == 4
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3]
    assert lines[0]["frozen_backbone"] and not lines[1]["frozen_backbone"]
    assert lines[-1]["loss"] < 0.7 * lines[0]["loss"]
    assert lines[-1]["lr"] < lines[0]["lr"]  # cosine schedule
    model = load_model(tmp_path / "run" / "last.safetensors")
    assert model.config.spaces == ("rgb",)  # the default; the shards hold rgb and ycbcr
    metrics = evaluate(model, str(shards), "train", 32, torch.device("cpu"), workers=0)
    assert metrics["frame_auc"] > 0.9 and metrics["video_auc"] > 0.9 and metrics["frame_bosc"] > 0.7
    last = tmp_path / "run" / "last.safetensors"
    arguments = [
        "eval",
        "--checkpoint",
        str(last),
        "--shards",
        str(shards),
        "--split",
        "train",
        "--workers",
        "1",
    ]
    assert main([*arguments, "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "run" / "last.eval-train.json").read_text())
    assert written["frame_auc"] == pytest.approx(metrics["frame_auc"]) and written["crop"] == 32
    assert "frame BOSC" in capsys.readouterr().out


def test_resume_gives_the_weights_of_an_uninterrupted_run(shards: Path, tmp_path: Path) -> None:
    # Two loader workers: the resumed run's skipped batches come from both, in turn.
    tiny = TINY | {"workers": 2}
    settings = dict(
        shards=str(shards), epochs=2, steps_per_epoch=3, freeze_epochs=1, spaces="rgb,ycbcr", **tiny
    )
    train(make_config(run=str(tmp_path / "whole"), **settings), show_progress=False)
    stopped = train(make_config(run=str(tmp_path / "parts"), max_steps=4, **settings), show_progress=False)
    assert stopped.step == 4
    with pytest.raises(FfxError, match="already holds a run"):
        train(make_config(run=str(tmp_path / "parts"), **settings), show_progress=False)
    # The state of step 4 with the weights of another step: a run stopped between two writes.
    shutil.copytree(tmp_path / "parts", tmp_path / "torn")
    shutil.copy(tmp_path / "whole" / "last.safetensors", tmp_path / "torn" / "last.safetensors")
    with pytest.raises(FfxError, match="disagree"):
        train(make_config(run=str(tmp_path / "torn"), shards=str(shards)), resume=True, show_progress=False)
    # Resuming needs only the run and the shards: every other setting comes from the run itself.
    resumed = train(
        make_config(run=str(tmp_path / "parts"), shards=str(shards)), resume=True, show_progress=False
    )
    assert resumed.step == 6
    whole, parts = (
        load_file(str(tmp_path / "whole" / "last.safetensors")),
        load_file(str(tmp_path / "parts" / "last.safetensors")),
    )
    assert whole.keys() == parts.keys() and all(torch.equal(whole[name], parts[name]) for name in whole)


def test_clear_errors_for_bad_runs(shards: Path, tmp_path: Path, capsys) -> None:
    run = str(tmp_path / "run")
    with pytest.raises(BuildError, match="colour spaces lab are not in the shards"):
        train(make_config(shards=str(shards), run=run, spaces="rgb,lab", **TINY), show_progress=False)
    with pytest.raises(FfxError, match="--classes-per-batch 3 but the data has 2 classes"):
        train(
            make_config(shards=str(shards), run=run, **(TINY | {"classes_per_batch": 3})), show_progress=False
        )
    with pytest.raises(FfxError, match="unknown preset"):
        make_config(preset="paper-2")
    assert main(["train", "--shards", str(tmp_path / "none"), "--run", run]) != 0
    assert "no shards match" in capsys.readouterr().err
    assert make_config(preset="mcx-api-paper").images_per_class == 9


def test_two_gloo_processes_under_torchrun_finish_the_same_steps(tmp_path: Path) -> None:
    """Ranks draw resampled shards (the train split has an odd number of them), so both run
    exactly steps_per_epoch steps per epoch and meet at every barrier; one process checks the
    shards while the other waits."""
    layout = LAYOUT | {
        "train-000002.tar": [("real_g_0", 0), ("real_g_1", 0), ("fake_h_0", 1), ("fake_h_1", 1)]
    }
    shards = make_shards(tmp_path / "build" / "shards", layout)  # written here: three train shards
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "--no-python", "--"]
    command += [
        str(Path(sys.executable).with_name("ffx")),
        "train",
        "--shards",
        str(shards),
        "--run",
        str(tmp_path / "ddp"),
    ]
    command += ["--backbone", "test_convnext", "--crop", "32", "--epochs", "2", "--steps-per-epoch", "3"]
    command += ["--classes-per-batch", "2", "--images-per-class", "4", "--workers", "1", "--device", "cpu"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["epoch"], line["step"]) for line in lines] == [(0, 3), (1, 6)]
    assert finished.stdout.count("train: step 6 of 6") == 1  # rank 0 alone reports
    checked = json.loads((tmp_path / "ddp" / SHARD_CHECKS).read_text())["checked"]
    assert sorted(Path(item["path"]).name for item in checked) == sorted(layout)


def test_shard_url_patterns_and_missing_classes(shards: Path, tmp_path: Path) -> None:
    pattern = str(shards / "train-*.tar")
    with pytest.raises(BuildError, match="give --classes and --steps-per-epoch"):
        train(make_config(shards=pattern, run=str(tmp_path / "a"), **TINY), show_progress=False)
    settings = dict(TINY, epochs=1, freeze_epochs=0)
    config = make_config(shards=pattern, run=str(tmp_path / "b"), classes=2, steps_per_epoch=2, **settings)
    report = train(config, show_progress=False)
    assert report.step == 2 and "val_frame_auc" not in report.metrics  # no index: no split to validate on
    gap = tmp_path / "gap"
    shutil.copytree(shards, gap)
    index = json.loads((gap / "index.json").read_text())
    for counts in [*index["shards"], *index["splits"].values()]:  # a consistent index without class 1
        counts["labels"] = {
            ("2" if label == "1" else label): count for label, count in counts["labels"].items()
        }
    (gap / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildError, match="class 1 is missing from the train split"):
        train(make_config(shards=str(gap), run=str(tmp_path / "c"), **TINY), show_progress=False)


# ---------------------------------------------------------------- logs a cluster user can read


def short_run(shards: Path, run: Path, *more: str) -> list[str]:
    """`ffx train` for 3 steps of one epoch."""
    arguments = ["train", "--shards", str(shards), "--run", str(run), "--device", "cpu", "--workers", "1"]
    arguments += ["--backbone", "test_convnext", "--crop", "32", "--epochs", "1", "--steps-per-epoch", "3"]
    return [*arguments, "--classes-per-batch", "2", "--images-per-class", "4", "--freeze-epochs", "0", *more]


PROGRESS_LINE = re.compile(
    r"train step (\d+)/3 epoch 1/1 loss \d+\.\d{4} lr \d\.\d\de[-+]\d\d \d+\.\d samples/s "
    r"elapsed \d+:\d\d:\d\d eta \d+:\d\d:\d\d"
)


@pytest.fixture
def no_forced_terminal(monkeypatch) -> None:
    """Rich takes these variables as a terminal whatever stderr is."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_forced_terminal")
def test_a_log_gets_a_plain_line_every_n_steps(shards: Path, tmp_path: Path, capfd) -> None:
    assert main(short_run(shards, tmp_path / "every", "--log-every", "1", "--no-verify")) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("train step")]
    assert len(lines) == 3 and all(PROGRESS_LINE.fullmatch(line) for line in lines), lines
    assert [int(PROGRESS_LINE.fullmatch(line)[1]) for line in lines] == [1, 2, 3]
    assert lines[-1].endswith("eta 0:00:00")
    assert main(short_run(shards, tmp_path / "second", "--log-every", "2", "--no-verify")) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("train step")]
    assert len(lines) == 1 and lines[0].startswith("train step 2/3 ")


@pytest.mark.usefixtures("no_forced_terminal")
def test_a_terminal_keeps_the_bar_and_no_lines(shards: Path, tmp_path: Path, capfd, monkeypatch) -> None:
    class Terminal:
        def __init__(self, **_options) -> None:
            self.is_terminal = True

    monkeypatch.setattr("ffx.train.loop.Console", Terminal)
    config = make_config(
        shards=str(shards), run=str(tmp_path / "run"), epochs=1, steps_per_epoch=3, freeze_epochs=0, **TINY
    )
    train(config, show_progress=True, verify=False, log_every=1)
    assert "train step" not in capfd.readouterr().err


def test_tensorboard_writes_event_files(shards: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(short_run(shards, run, "--tensorboard", "--no-verify")) == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_second", "epoch/loss", "val/video_auc"} <= tags
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]
    line = json.loads((run / "metrics.jsonl").read_text())
    assert events.Scalars("epoch/loss")[0].value == pytest.approx(line["loss"])
    assert any(tag.startswith("val_") and tag.endswith("/video_auc") for tag in tags)  # per method


def test_tensorboard_without_the_package_is_one_line(
    shards: Path, tmp_path: Path, capfd, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    assert main(short_run(shards, tmp_path / "run", "--tensorboard")) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install tensorboard" in lines[0], lines
    assert not (tmp_path / "run").exists()  # told before anything runs
