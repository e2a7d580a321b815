"""Issue 26.1: validation reads real and fake from the class names, as `ffx eval` does, not
"class 0 is real". Shards labelled {Deepfakes: 0, pristine: 1, Face2Face: 2}: the validation's
video AUC equals a hand count over the videos' mean scores with pristine as real, and equals
`ffx eval` of the same weights; `pristine` is never listed as a fake method."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from ffx.cli import main
from ffx.errors import FfxError
from ffx.model.mcx_api import MCXAPI, ModelConfig
from ffx.train.config import TrainConfig
from ffx.train.evaluate import score_split
from ffx.train.state import save_run_checkpoint
from ffx.train.validate import evaluate, validation_real
from tests.generated import png, shard_entry

NAMES = {0: "Deepfakes", 1: "pristine", 2: "Face2Face"}


def write_named_shards(folder: Path, names: dict[int, str], videos_named: bool = True) -> Path:
    """train and val shards of 3 videos per class, 2 frames each, every sample naming its label
    (and its video, unless not `videos_named`: shards made by another tool)."""
    folder.mkdir(parents=True)
    entries, splits = [], {}
    for split in ("train", "val"):
        buffer = io.BytesIO()
        samples = [(f"{split}_{label}_{video}", label) for label in names for video in range(3)]
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for video, label in samples:
                for frame in range(2):
                    key = f"{video}_{frame}"
                    meta = {"video": video, "label": label, "label_name": names[label], "method": ""}
                    if not videos_named:
                        del meta["video"]
                    for suffix, data in (
                        ("cls", str(label).encode()),
                        ("json", json.dumps(meta).encode()),
                        ("rgb.png", png(key)),
                    ):
                        info = tarfile.TarInfo(f"{key}.{suffix}")
                        info.size = len(data)
                        archive.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        name = f"{split}-000000.tar"
        (folder / name).write_bytes(data)
        labels = dict(Counter(str(label) for _, label in samples for _frame in range(2)))
        entries.append(shard_entry(name, 2 * len(samples), data, labels))
        splits[split] = {"samples": 2 * len(samples), "labels": labels}
    (folder / "index.json").write_text(
        json.dumps({"settings": {"spaces": ["rgb"]}, "shards": entries, "splits": splits})
    )
    return folder


def ffx_eval(model: MCXAPI, shards: Path, folder: Path) -> dict:
    """metrics.json of `ffx eval` on the val split, the model saved as a run's checkpoint."""
    save_run_checkpoint(
        folder / "run", "last.safetensors", model, TrainConfig(crop=32, shards=str(shards)), 0
    )
    checkpoint, out = folder / "run" / "last.safetensors", folder / "eval"
    arguments = ["eval", "--checkpoint", str(checkpoint), "--shards", str(shards), "--split", "val"]
    assert main([*arguments, "--out", str(out), "--workers", "1", "--crop", "32"]) == 0
    return json.loads((out / "metrics.json").read_text())


def hand_auc(real: list[float], fake: list[float]) -> float:
    """P(a fake video scores above a real one), ties half: the Mann-Whitney count."""
    pairs = [(f > r) + 0.5 * (f == r) for f in fake for r in real]
    return sum(pairs) / len(pairs)


def test_validation_reads_real_from_the_class_names(tmp_path: Path, capsys) -> None:
    shards = write_named_shards(tmp_path / "shards", NAMES)
    torch.manual_seed(0)
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=3))
    assert validation_real(str(shards), "val", 3) == ((1,), {1})
    metrics = evaluate(model, str(shards), "val", 32, torch.device("cpu"), workers=0)
    rows = score_split(model, str(shards), "val", 32, torch.device("cpu"), 0, real=(1,))
    means: dict[str, list[float]] = {}
    for row in rows:
        means.setdefault(row["video"], []).append(row["score"])
    mean = {video: sum(scores) / len(scores) for video, scores in means.items()}
    real = [score for video, score in mean.items() if video.startswith("val_1_")]
    fake = [score for video, score in mean.items() if not video.startswith("val_1_")]
    assert len(real) == 3 and len(fake) == 6
    assert metrics["video_auc"] == pytest.approx(hand_auc(real, fake), abs=1e-12)
    assert sorted(metrics["methods"]) == ["Deepfakes", "Face2Face"]  # pristine is no method
    # ffx eval of the same weights says the same.
    evaluated = ffx_eval(model, shards, tmp_path)
    assert evaluated["pooled"]["video"]["auc"] == pytest.approx(metrics["video_auc"], abs=1e-12)


def test_validation_refuses_classes_of_which_none_is_real(tmp_path: Path) -> None:
    shards = write_named_shards(tmp_path / "shards", {0: "Deepfakes", 1: "Face2Face"})
    with pytest.raises(
        FfxError, match=r"none of the training classes \(Deepfakes, Face2Face\) is named real"
    ):
        validation_real(str(shards), "val", 2)


def test_a_random_backbone_frozen_for_epochs_is_said_in_one_line() -> None:
    from ffx.train.config import frozen_random_backbone, make_config

    said = frozen_random_backbone(make_config(shards="s", run="r"))
    assert "random weights" in said and "first 8 epochs" in said and "\n" not in said
    assert frozen_random_backbone(make_config(shards="s", run="r", freeze_epochs=0)) == ""
    assert frozen_random_backbone(make_config(shards="s", run="r", pretrained="resnet.safetensors")) == ""
    assert frozen_random_backbone(make_config(shards="s", run="r", init_from="run/best.safetensors")) == ""


def test_samples_that_name_no_video_are_said_in_eval_and_validation(tmp_path: Path, capsys) -> None:
    shards = write_named_shards(tmp_path / "shards", NAMES, videos_named=False)
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=3))
    metrics = evaluate(model, str(shards), "val", 32, torch.device("cpu"), workers=0)
    assert metrics["videos"] == metrics["frames"] == 18  # each sample its own video: said, below
    said = capsys.readouterr().err
    assert "18 of 18 samples name no video" in said and said.count("\n") == 1
    notes = ffx_eval(model, shards, tmp_path)["notes"]
    assert any("18 of 18 samples name no video" in note for note in notes), notes
