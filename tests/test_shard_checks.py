"""`ffx train` and `ffx eval` check shards against index.json before reading them, and stop with
one line on a damaged shard or record. Shards are written with tarfile (tests/generated.py, no pipeline)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from ffx.cli import main
from ffx.data import SHARD_CHECKS, RecordError, check_shard_files, open_shards, shard_dataset, shard_loader
from ffx.errors import BuildError, FfxError
from ffx.model.mcx_api import MCXAPI, ModelConfig
from ffx.pipeline.engine import atomic
from ffx.train.config import make_config
from ffx.train.loop import train
from ffx.train.validate import evaluate
from tests.assertions import one_error_line
from tests.generated import LAYOUT, eval_args, make_checkpoint, make_shards, tar_bytes, train_args

TINY = {"backbone": "test_convnext", "crop": 32, "classes_per_batch": 2, "images_per_class": 2}
# One step of one epoch (then validation on the val shard): enough to read every kind of shard.
SHORT = {"epochs": 1, "steps_per_epoch": 1, "freeze_epochs": 0, "workers": 0}
NOT_A_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00garbled" * 20


def flip_last_byte(path: Path) -> None:
    """A changed byte in the tar's end padding: readable as before, but not the indexed file."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """Names of the files hashed (the pipeline's one hashing helper, counted)."""
    names: list[str] = []
    original = atomic.file_sha256

    def counting(path: Path) -> str:
        names.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(atomic, "file_sha256", counting)
    return names


def test_a_changed_shard_stops_train_and_eval_unless_no_verify(tmp_path: Path, capfd) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    checkpoint = make_checkpoint(tmp_path / "model")
    flip_last_byte(shards / "train-000001.tar")
    assert main(train_args(shards, tmp_path / "run")) == 1
    line = one_error_line(capfd)
    assert str(shards / "train-000001.tar") in line and "sha256" in line
    assert f"ffx verify {tmp_path / 'build'}" in line and f"ffx shard {tmp_path / 'build'}" in line
    assert not (tmp_path / "run" / "last.safetensors").exists()
    assert main(train_args(shards, tmp_path / "run", "--no-verify")) == 0  # the flip is harmless
    capfd.readouterr()

    flip_last_byte(shards / "val-000000.tar")
    assert main(eval_args(checkpoint, shards)) == 1
    line = one_error_line(capfd)
    assert str(shards / "val-000000.tar") in line and "sha256" in line
    assert not (tmp_path / "model" / "last.eval-val.json").exists()
    assert main(eval_args(checkpoint, shards, "--no-verify", "--workers", "1")) == 0
    assert (tmp_path / "model" / "last.eval-val.json").is_file()


def test_missing_and_resized_shards_are_told_before_any_hashing(tmp_path: Path, hashed) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    with open(shards / "val-000000.tar", "ab") as shard:
        shard.write(b"\0")
    with pytest.raises(BuildError, match=r"val-000000\.tar: \d+ bytes, index.json says \d+; run `ffx verify"):
        train(
            make_config(shards=str(shards), run=str(tmp_path / "run"), **TINY, **SHORT), show_progress=False
        )
    (shards / "train-000000.tar").unlink()
    with pytest.raises(BuildError, match=r"train-000000\.tar: listed in index.json but missing"):
        check_shard_files(shards, ["train"], tmp_path / "checks.json")
    assert hashed == []  # a stat is enough to tell
    assert check_shard_files(shards, ["test"], tmp_path / "checks.json") == 0  # no such split: nothing


def test_checks_are_remembered_in_the_run_folder(tmp_path: Path, hashed) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    settings = dict(shards=str(shards), **TINY, **SHORT | {"epochs": 2})
    train(make_config(run=str(tmp_path / "run"), max_steps=1, **settings), show_progress=False)
    assert sorted(hashed) == sorted(LAYOUT)  # train and validation shards, once each
    checks = json.loads((tmp_path / "run" / SHARD_CHECKS).read_text())["checked"]
    assert {Path(item["path"]).name for item in checks} == set(LAYOUT)

    hashed.clear()  # a resumed run, and eval of its checkpoint, hash nothing again
    report = train(
        make_config(run=str(tmp_path / "run"), shards=str(shards)), resume=True, show_progress=False
    )
    assert report.step == 2
    assert main(eval_args(tmp_path / "run" / "last.safetensors", shards, "--device", "cpu")) == 0
    assert hashed == []

    # A rewritten shard (new mtime) is hashed again; only that one.
    shard = shards / "train-000001.tar"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert check_shard_files(shards, ["train", "val"], tmp_path / "run" / SHARD_CHECKS) == 1
    assert hashed == ["train-000001.tar"]
    assert check_shard_files(shards, ["train", "val"], tmp_path / "run" / SHARD_CHECKS) == 0
    # Shards given as a URL pattern have no index to check against: nothing is hashed.
    pattern = str(shards / "train-*.tar")
    assert check_shard_files(pattern, ["train"], tmp_path / "other.json") == 0
    assert not (tmp_path / "other.json").exists()


def test_a_shard_that_differs_keeps_the_checks_made_before_it(tmp_path: Path, hashed) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    damaged = bytearray((shards / "val-000000.tar").read_bytes())
    damaged[600] ^= 1  # the same size: only the hash tells
    (shards / "val-000000.tar").write_bytes(bytes(damaged))
    with pytest.raises(BuildError, match=r"val-000000\.tar: sha256 .*, index.json says"):
        check_shard_files(shards, ["train", "val"], tmp_path / "checks.json")
    kept = json.loads((tmp_path / "checks.json").read_text())["checked"]
    assert sorted(Path(item["path"]).name for item in kept) == ["train-000000.tar", "train-000001.tar"]
    hashed.clear()
    with pytest.raises(BuildError):
        check_shard_files(shards, ["train", "val"], tmp_path / "checks.json")
    assert hashed == ["val-000000.tar"]  # the others are remembered


def test_a_read_only_shard_folder_is_never_written(tmp_path: Path) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    before = {path.name: path.stat().st_mtime_ns for path in shards.iterdir()}
    for path in [*shards.iterdir(), shards]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        run = tmp_path / "run"
        train(make_config(shards=str(shards), run=str(run), **TINY, **SHORT), show_progress=False)
        assert main(eval_args(run / "last.safetensors", shards, "--device", "cpu")) == 0
    finally:
        shards.chmod(0o755)
    # Root ignores the modes above: what proves nothing was written is the unchanged folder.
    assert {path.name: path.stat().st_mtime_ns for path in shards.iterdir()} == before
    assert (run / SHARD_CHECKS).is_file() and (run / "last.eval-val.json").is_file()


@pytest.mark.parametrize("workers", [0, 1])
def test_an_undecodable_png_names_its_shard_and_sample(tmp_path: Path, workers: int) -> None:
    # Training draws shards with replacement and shuffles samples: both fakes are bad, so the first
    # batch (two fakes, two reals) holds a bad one.
    bad = {"fake_d_0": NOT_A_PNG, "fake_d_1": NOT_A_PNG}
    only = make_shards(tmp_path / "only", {"train-000000.tar": LAYOUT["train-000001.tar"]}, pngs=bad)
    config = make_config(shards=str(only), run=str(tmp_path / "run"), **TINY, **SHORT | {"workers": workers})
    with pytest.raises(RecordError) as raised:
        train(config, show_progress=False)
    message = str(raised.value)
    assert re.match(
        rf"{re.escape(str(only / 'train-000000.tar'))}: sample fake_d_[01]: rgb\.png is not", message
    )
    assert "\n" not in message

    shards = make_shards(tmp_path / "shards", pngs={"fake_d_0": NOT_A_PNG, "real_e_1": NOT_A_PNG})
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=2)).eval()
    with pytest.raises(
        RecordError, match=r"val-000000\.tar: sample real_e_1: rgb\.png is not a readable PNG"
    ):
        evaluate(model, str(shards), "val", 32, torch.device("cpu"), workers=workers)
    with pytest.raises(RecordError, match=r"train-000001\.tar: sample fake_d_0: rgb\.png"):
        list(shard_dataset(shards, "train", crop=32))  # no loader: raised in this process


def test_an_undecodable_record_stops_ffx_eval_with_one_line(tmp_path: Path, capfd) -> None:
    shards = make_shards(tmp_path / "build" / "shards", pngs={"fake_f_0": NOT_A_PNG})
    checkpoint = make_checkpoint(tmp_path / "model")
    assert main(eval_args(checkpoint, shards, "--device", "cpu", "--workers", "1")) == 1
    line = one_error_line(capfd)
    assert f"{shards / 'val-000000.tar'}: sample fake_f_0: rgb.png is not a readable PNG" in line


@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_tar_names_its_shard_and_the_sample_being_read(tmp_path: Path, workers: int) -> None:
    whole = tar_bytes(LAYOUT["val-000000.tar"], {})
    inside_second_png = whole.index(b"real_e_1.rgb.png") + 512 + 100  # header, then 100 bytes of data
    shards = make_shards(tmp_path / "shards", cut={"val-000000.tar": inside_second_png})
    check_shard_files(shards, ["val"], tmp_path / "checks.json")  # the index describes the cut file
    dataset = shard_dataset(shards, "val", crop=32)
    with pytest.raises(RecordError) as raised:
        list(shard_loader(dataset, batch_size=2, workers=workers))
    message = str(raised.value)
    assert message.startswith(f"{shards / 'val-000000.tar'}: sample real_e_1: unreadable tar (ReadError")
    assert "\n" not in message


def test_a_single_class_is_refused(tmp_path: Path, capfd) -> None:
    layout = {
        "train-000000.tar": [("real_a_0", 0), ("real_a_1", 0), ("real_b_0", 0), ("real_b_1", 0)],
        "val-000000.tar": LAYOUT["val-000000.tar"],
    }
    shards = make_shards(tmp_path / "shards", layout)
    with pytest.raises(BuildError, match=r"holds one class .*needs at least 2"):
        train(make_config(shards=str(shards), run=str(tmp_path / "a"), **TINY, **SHORT), show_progress=False)
    assert main(train_args(shards, tmp_path / "b", "--classes-per-batch", "1")) == 1
    assert "holds one class" in one_error_line(capfd)
    pattern = str(shards / "train-*.tar")
    with pytest.raises(FfxError, match="--classes 1: a detector needs at least 2"):
        train(
            make_config(shards=pattern, run=str(tmp_path / "c"), classes=1, **TINY, **SHORT),
            show_progress=False,
        )


def test_a_build_folder_given_for_its_shards_is_one_line(tmp_path: Path) -> None:
    """`--shards BUILD` instead of `BUILD/shards`: BUILD/index.json is `ffx index`'s, not a shards index."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "index.json").write_text('{"root": "/data", "dataset": "folder"}')
    with pytest.raises(BuildError, match=r"is not a shards index; give --shards .*/shards"):
        open_shards(tmp_path, "test")
