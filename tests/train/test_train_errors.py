"""Issue 16, "every fault gets one line": `ffx train` / `ffx eval` faults (a file that is no
checkpoint, a pretrained file that is no plain state dict or does not fit, a backbone timm would
fetch from the network, bad Slurm array variables) end in exit 1 and one stderr line naming the
file or value and what to do, never a traceback; a one-class validation split is one warning line
and `best.safetensors` by validation loss. Shards are written with tarfile (no pipeline)."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ffx.cli import main
from tests.assertions import fails_in_one_line
from tests.generated import LAYOUT, eval_args, make_checkpoint, make_shards, train_args

EXPECTED = "a checkpoint written by `ffx train`"
WEIGHTS = "pass a timm/torch state dict saved with torch.save(state_dict) or a .safetensors file"


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    return make_shards(tmp_path / "build" / "shards")


# ---------------------------------------------------------------- 7a: ffx eval --checkpoint GARBAGE


def garbage_checkpoints(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    whole = make_checkpoint(folder / "run").read_bytes()
    files = {
        "random": os.urandom(4096),
        "truncated": whole[: len(whole) // 2],
        "header only": whole[:20],
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name.replace(' ', '-')}.safetensors"
        paths[name].write_bytes(data)
    paths["no ffx metadata"] = folder / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(paths["no ffx metadata"]))
    return paths


def test_eval_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path: Path, shards: Path, capfd) -> None:
    for kind, checkpoint in garbage_checkpoints(tmp_path / "files").items():
        line = fails_in_one_line(eval_args(checkpoint, shards, "--device", "cpu"), capfd)
        assert str(checkpoint) in line and EXPECTED in line, (kind, line)
        assert not checkpoint.with_name(f"{checkpoint.stem}.eval-val.json").exists()
    line = fails_in_one_line(eval_args(tmp_path / "none.safetensors", shards, "--device", "cpu"), capfd)
    assert "checkpoint not found" in line and EXPECTED in line


def test_eval_of_a_checkpoint_whose_weights_do_not_fit_its_metadata(
    tmp_path: Path, shards: Path, capfd
) -> None:
    source = make_checkpoint(tmp_path / "run")
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(source))
    model = json.loads(metadata["model"])
    wrong = tmp_path / "three-classes.safetensors"  # the metadata says 3 classes, the weights 2
    save_file(tensors, str(wrong), metadata=metadata | {"model": json.dumps(model | {"num_classes": 3})})
    line = fails_in_one_line(eval_args(wrong, shards, "--device", "cpu"), capfd)
    assert str(wrong) in line and "head.classifier.weight" in line and EXPECTED in line
    broken = tmp_path / "broken-config.safetensors"
    save_file(tensors, str(broken), metadata=metadata | {"model": "{not json"})
    line = fails_in_one_line(eval_args(broken, shards, "--device", "cpu"), capfd)
    assert str(broken) in line and "model config" in line and EXPECTED in line


# ---------------------------------------------------------------- 7b: ffx train --pretrained FILE


class Payload:
    """Pickled, it asks the unpickler to call open(marker, "w"): code, not weights."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_as_pretrained_is_refused_in_one_line(tmp_path: Path, shards: Path, capfd) -> None:
    marker = tmp_path / "payload-ran"
    payloads = {"zip": tmp_path / "payload.pth", "module": tmp_path / "module.pt"}
    torch.save({"stem.0.weight": Payload(marker)}, payloads["zip"])
    torch.save(torch.nn.Linear(2, 2), payloads["module"])  # a whole module: objects, not a state dict
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(Payload(marker), protocol=4))
    payloads["raw pickle"] = tmp_path / "raw.pkl"
    for kind, path in payloads.items():
        run = tmp_path / f"run-{kind.replace(' ', '-')}"
        line = fails_in_one_line(train_args(shards, run, "--pretrained", str(path)), capfd)
        assert f"{path} is not a plain weights file; {WEIGHTS}" in line, (kind, line)
        assert not marker.exists() and not (run / "shard-checks.json").exists()  # before any hashing


def test_pretrained_files_that_are_missing_unreadable_or_do_not_fit(
    tmp_path: Path, shards: Path, capfd
) -> None:
    missing = tmp_path / "missing.pth"
    line = fails_in_one_line(train_args(shards, tmp_path / "a", "--pretrained", str(missing)), capfd)
    assert f"pretrained weights not found: {missing}" in line
    for name, data in {
        "empty.pth": b"",
        "random.pth": os.urandom(512),
        "cut.safetensors": b"\1" * 30,
    }.items():
        (tmp_path / name).write_bytes(data)
        line = fails_in_one_line(
            train_args(shards, tmp_path / "b", "--pretrained", str(tmp_path / name)), capfd
        )
        assert str(tmp_path / name) in line and WEIGHTS in line, line
    other = tmp_path / "other.pth"  # another network's keys
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "bn1.weight": torch.zeros(8)}, other)
    line = fails_in_one_line(train_args(shards, tmp_path / "c", "--pretrained", str(other)), capfd)
    assert f"{other} does not fit the test_convnext backbone" in line
    assert (
        "missing (stem.0.weight, stem.0.bias, …)" in line and "unexpected (conv1.weight, bn1.weight)" in line
    )
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- 7d: backbones timm would download


@pytest.mark.parametrize(
    "backbone", ["hf-hub:org/model", "hf_hub:timm/resnet18", "local-dir:/models/x", "timm/resnet18.a1_in1k"]
)
def test_a_hub_backbone_fails_fast_without_the_network(
    tmp_path: Path, shards: Path, capfd, monkeypatch, backbone: str
) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("timm.create_model must not see a hub name")

    monkeypatch.setattr(timm, "create_model", no_network)
    started = time.monotonic()
    arguments = train_args(shards, tmp_path / "run")
    arguments[arguments.index("test_convnext")] = backbone
    line = fails_in_one_line(arguments, capfd)
    assert time.monotonic() - started < 5
    assert repr(backbone) in line and "never downloads" in line and "--pretrained" in line


def test_an_unknown_backbone_names_close_matches(tmp_path: Path, shards: Path, capfd) -> None:
    arguments = train_args(shards, tmp_path / "run")
    arguments[arguments.index("test_convnext")] = "resnet19"
    line = fails_in_one_line(arguments, capfd)
    assert "unknown timm backbone 'resnet19': did you mean resnet18" in line
    arguments[arguments.index("resnet19")] = "resnet18.no_such_tag"
    assert "unknown timm backbone 'resnet18.no_such_tag'" in fails_in_one_line(arguments, capfd)


# ---------------------------------------------------------------- 7c: Slurm array variables


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='x'"),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT=0"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID=4"),
    ],
)
def test_bad_slurm_array_variables_are_one_line(
    tmp_path: Path, capfd, monkeypatch, variables: dict, named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_ARRAY_TASK_MIN", raising=False)
    line = fails_in_one_line(["extract", str(tmp_path / "build")], capfd)
    assert named in line and "--part" in line


# ---------------------------------------------------------------- 12: a validation split of one class


def test_a_one_class_validation_split_warns_once_and_keeps_the_best_by_loss(tmp_path: Path, capfd) -> None:
    layout = LAYOUT | {"val-000000.tar": [("real_e_0", 0), ("real_e_1", 0), ("real_g_0", 0)]}
    shards = make_shards(tmp_path / "build" / "shards", layout)
    run = tmp_path / "run"
    assert main(train_args(shards, run, "--epochs", "2")) == 0
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0], lines
    assert "val split" in lines[0] and "one class (label 0 only)" in lines[0]
    assert "validation loss" in lines[0]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(line["val_video_auc"] is None and line["val_loss"] > 0 for line in metrics)
    assert (run / "best.safetensors").is_file()
    best_loss = min(line["val_loss"] for line in metrics)
    best_step = next(line["step"] for line in metrics if line["val_loss"] == best_loss)
    with safe_open(str(run / "best.safetensors"), "pt") as handle:
        assert int(handle.metadata()["step"]) == best_step


def test_a_two_class_validation_split_gives_no_warning(tmp_path: Path, capfd) -> None:
    shards = make_shards(tmp_path / "build" / "shards")
    assert main(train_args(shards, tmp_path / "run")) == 0
    assert "warning" not in capfd.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert metrics["val_video_auc"] is not None and metrics["val_loss"] > 0
    assert (tmp_path / "run" / "best.safetensors").is_file()
