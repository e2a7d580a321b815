"""`ffx eval` (issue 13): metrics per manipulation method and per build, frame and video level,
cross-dataset class maps through the checkpoint's class names, and the files under --out.
Shards are written here with tarfile; the checkpoint is trained for one step."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.metrics import average_precision_score, roc_auc_score

from ffx.cli import main
from ffx.data import SHARD_CHECKS, shard_dataset, shard_loader
from ffx.errors import FfxError
from ffx.model.checkpoint import load_model, normalise
from ffx.model.mcx_api import MCXAPI, ModelConfig
from ffx.train.config import TrainConfig, make_config
from ffx.train.evaluate import (
    PREDICTIONS_SCHEMA,
    build_real_labels,
    checkpoint_classes,
    dataset_metrics,
)
from ffx.train.loop import train
from ffx.train.metrics import detection_metrics, nan_to_none
from ffx.train.state import save_run_checkpoint
from tests.assertions import one_error_line, pair_auc
from tests.generated import make_shards, png, shard_entry

FFPP_NAMES = ["pristine", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
TINY = {"backbone": "test_convnext", "crop": 32, "classes_per_batch": 2, "images_per_class": 2}


def video_samples(dataset: str, video: str, label: int, name: str, method: str, frames: int = 2) -> list:
    """(key, label, sample JSON) of a video's frames, as `ffx shard` writes them."""
    facts = {"dataset": dataset, "label": label, "label_name": name, "method": method, "split": "test"}
    return [
        (f"{video}_{frame:04d}", label, facts | {"video": video, "frame_index": frame, "track": 0})
        for frame in range(frames)
    ]


def write_build(shards: Path, splits: dict[str, list[tuple[str, int, dict]]]) -> Path:
    """BUILD/shards: one shard per split ({key}.cls, .json, .rgb.png) and its index.json."""
    shards.mkdir(parents=True)
    entries, totals = [], {}
    for split, samples in splits.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for key, label, meta in samples:
                members = {"cls": str(label).encode(), "json": json.dumps(meta).encode(), "rgb.png": png(key)}
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mtime = len(data), 0
                    archive.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        name = f"{split}-000000.tar"
        (shards / name).write_bytes(data)
        labels = dict(sorted(Counter(str(label) for _, label, _ in samples).items()))
        entries.append(shard_entry(name, len(samples), data, labels))
        totals[split] = {"shards": 1, "samples": len(samples), "bytes": len(data), "labels": labels}
    index = {"settings": {"spaces": ["rgb"]}, "shards": entries, "splits": totals}
    (shards / "index.json").write_text(json.dumps(index))
    return shards


def ffpp_samples() -> dict[str, list]:
    """Train: one video of each of the five classes; test: two originals, two Deepfakes videos
    and one Face2Face video, two frames each."""
    train = [
        sample
        for label, name in enumerate(FFPP_NAMES)
        for sample in video_samples(
            "ffpp", f"{name}_t{label}", label, name, "original" if not label else name
        )
    ]
    test = [
        *video_samples("ffpp", "original_000", 0, "pristine", "original"),
        *video_samples("ffpp", "original_001", 0, "pristine", "original"),
        *video_samples("ffpp", "Deepfakes_000_001", 1, "Deepfakes", "Deepfakes"),
        *video_samples("ffpp", "Deepfakes_001_000", 1, "Deepfakes", "Deepfakes"),
        *video_samples("ffpp", "Face2Face_000_001", 2, "Face2Face", "Face2Face"),
    ]
    return {"train": train, "test": test}


def celebdf_samples(names: tuple[str, str] = ("real", "fake")) -> dict[str, list]:
    """A binary build (Celeb-DF's label map): two real and two fake videos."""
    real, fake = names
    return {
        "test": [
            *video_samples("celebdf-v2", "Celeb-real_id0_0000", 0, real, "Celeb-real"),
            *video_samples("celebdf-v2", "YouTube-real_00000", 0, real, "YouTube-real"),
            *video_samples("celebdf-v2", "Celeb-synthesis_id0_id1_0000", 1, fake, "Celeb-synthesis"),
            *video_samples("celebdf-v2", "Celeb-synthesis_id1_id0_0000", 1, fake, "Celeb-synthesis"),
        ]
    }


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval")
    return {
        "ffpp": write_build(folder / "ffpp" / "shards", ffpp_samples()),
        "celebdf": write_build(folder / "celebdf" / "shards", celebdf_samples()),
    }


@pytest.fixture(scope="module")
def checkpoint(builds, tmp_path_factory) -> Path:
    """A five-class FF++ checkpoint, trained for one step."""
    run = tmp_path_factory.mktemp("run") / "run"
    config = make_config(
        shards=str(builds["ffpp"]),
        run=str(run),
        epochs=1,
        steps_per_epoch=1,
        freeze_epochs=0,
        workers=0,
        **TINY,
    )
    train(config, show_progress=False)
    return run / "last.safetensors"


def eval_args(checkpoint: Path, *builds: Path, more: tuple[str, ...] = ()) -> list[str]:
    arguments = ["eval", "--checkpoint", str(checkpoint), "--split", "test", "--device", "cpu"]
    for shards in builds:
        arguments += ["--shards", str(shards)]
    return [*arguments, "--workers", "1", *more]


def fake_scores(checkpoint: Path, shards: Path, real: int) -> dict[str, float]:
    """1 - p(class `real`) of every test sample, computed here with the model itself."""
    model = load_model(checkpoint)
    mean, std = getattr(model.config, "mean", 0.5), getattr(model.config, "std", 0.5)
    scores = {}
    with torch.no_grad():
        for batch in shard_loader(shard_dataset(shards, "test", ("rgb",), 32), batch_size=8, workers=0):
            images = normalise(batch["image"], torch.device("cpu"), mean, std)
            probabilities = torch.softmax(model(images).double(), 1)
            scores.update(zip(batch["key"], (1 - probabilities[:, real]).tolist()))
    return scores


def with_metadata(source: Path, target: Path, **changes: str | None) -> Path:
    """A copy of a checkpoint with metadata entries replaced (None: removed)."""
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(source)), str(target), metadata=metadata)
    return target


# ---------------------------------------------------------------- class names in checkpoints


def test_checkpoints_record_the_class_names_of_their_shards(builds, checkpoint: Path, tmp_path: Path) -> None:
    with safe_open(str(checkpoint), "pt") as handle:
        assert json.loads(handle.metadata()["class_names"]) == FFPP_NAMES
    # Shards whose samples carry no label names (and no shards at all): class0, class1, ...
    unnamed = make_shards(tmp_path / "unnamed" / "shards")
    model = MCXAPI(ModelConfig(backbone="test_convnext", spaces=("rgb",), num_classes=2))
    save_run_checkpoint(tmp_path, "plain.safetensors", model, TrainConfig(shards=str(unnamed), crop=32), 0)
    save_run_checkpoint(tmp_path, "none.safetensors", model, TrainConfig(crop=32), 0)
    for name in ("plain.safetensors", "none.safetensors"):
        with safe_open(str(tmp_path / name), "pt") as handle:
            metadata = handle.metadata()
        assert json.loads(metadata["class_names"]) == ["class0", "class1"]
        classes = checkpoint_classes(metadata, 2, tmp_path / name)
        assert classes.real == (0,) and "class 0 is taken as real" in classes.notes[0]


def test_class_maps_are_reconciled_by_name_or_refused() -> None:
    names = {"class_names": json.dumps(["fake", "real"])}
    assert checkpoint_classes(names, 2, Path("x")).real == (1,)
    assert checkpoint_classes({}, 5, Path("x")).real == (0,)  # an older checkpoint: class 0
    with pytest.raises(FfxError, match=r"none of its classes \(cat, dog\) is named pristine or real"):
        checkpoint_classes({"class_names": json.dumps(["cat", "dog"])}, 2, Path("x"))
    with pytest.raises(FfxError, match="not 3 names"):
        checkpoint_classes(names, 3, Path("x"))
    # The scored build: by name, else label 0.
    assert build_real_labels({0: "real", 1: "fake"}, [0, 1], "b") == {0}
    assert build_real_labels({0: "fake", 1: "Pristine"}, [0, 1], "b") == {1}
    assert build_real_labels({0: "pristine", 1: "Deepfakes", 2: "Face2Face"}, [0, 1, 2, -1], "b") == {0}
    assert build_real_labels({}, [0, 1], "b") == {0}
    with pytest.raises(FfxError, match=r"b: none of its classes \(0 cat, 1 dog\)"):
        build_real_labels({0: "cat", 1: "dog"}, [0, 1], "b")


# ---------------------------------------------------------------- metrics per method, by hand


def rows_of(videos: dict[tuple[str, int, str], list[float]]) -> list[dict]:
    return [
        {"video": video, "label": label, "method": method, "fake": label != 0, "score": score}
        for (video, label, method), scores in videos.items()
        for score in scores
    ]


def test_per_method_and_video_level_metrics_by_hand() -> None:
    rows = rows_of(
        {
            ("r1", 0, "original"): [0.1, 0.3],  # video mean 0.2
            ("r2", 0, "original"): [0.6],
            ("d1", 1, "Deepfakes"): [0.7, 0.9],  # video mean 0.8
            ("d2", 1, "Deepfakes"): [0.2],
            ("f1", 2, "Face2Face"): [0.4],
        }
    )
    metrics = dataset_metrics(rows, "build")
    assert set(metrics["methods"]) == {"Deepfakes", "Face2Face"}
    deepfakes = metrics["methods"]["Deepfakes"]
    # Frames: reals 0.1 0.3 0.6 against fakes 0.7 0.9 0.2: 7 of 9 pairs ranked right.
    assert deepfakes["frame"]["auc"] == pytest.approx(7 / 9)
    # At 0.5: fakes 2 of 3 caught, reals 2 of 3 passed.
    assert deepfakes["frame"]["bosc"] == pytest.approx(2 / 3) and deepfakes["frame"]["acc"] == pytest.approx(
        4 / 6
    )
    assert (deepfakes["frame"]["real"], deepfakes["frame"]["fake"], deepfakes["frame"]["frames"]) == (3, 3, 6)
    # Videos: reals 0.2 0.6 against fakes 0.8 0.2: 2 right, a tie (half), 1 wrong of 4.
    assert deepfakes["video"]["auc"] == pytest.approx(2.5 / 4) and deepfakes["video"]["videos"] == 4
    # BOSC: fake 0.8 caught, 0.2 missed; real 0.2 passed, 0.6 not.
    assert deepfakes["video"]["bosc"] == pytest.approx(0.5)
    face2face = metrics["methods"]["Face2Face"]
    assert face2face["frame"]["auc"] == pytest.approx(2 / 3) and face2face["video"]["auc"] == pytest.approx(
        1 / 2
    )
    assert (face2face["video"]["real"], face2face["video"]["fake"]) == (2, 1)
    pooled = metrics["pooled"]
    assert pooled["frame"]["frames"] == 7 and pooled["video"]["videos"] == 5
    # Pooled frames: reals 0.1 0.3 0.6 against fakes 0.7 0.9 0.2 0.4: 7 + 2 = 9 of 12 pairs.
    assert pooled["frame"]["auc"] == pytest.approx(9 / 12)

    # A subset of one class: AUC, AP, EER and BOSC are null in JSON, never NaN.
    only_fakes = dataset_metrics([row for row in rows if row["fake"]], "build")
    frame = only_fakes["pooled"]["frame"]
    assert frame["auc"] is frame["ap"] is frame["eer"] is frame["bosc"] is None and frame["acc"] == 0.5
    text = json.dumps(nan_to_none(only_fakes), allow_nan=False)
    assert "NaN" not in text and '"auc": null' in text


def test_a_video_whose_frames_disagree_on_the_label_is_refused() -> None:
    rows = rows_of({("v1", 0, "original"): [0.1], ("v2", 1, "Deepfakes"): [0.8]})
    rows.append({"video": "v1", "label": 1, "method": "Deepfakes", "fake": True, "score": 0.3})
    with pytest.raises(FfxError, match=r"build: the frames of video 'v1' disagree on its label \(0 and 1\)"):
        dataset_metrics(rows, "build")


# ---------------------------------------------------------------- ffx eval


def test_eval_writes_metrics_predictions_and_plots(builds, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(eval_args(checkpoint, builds["ffpp"], more=("--out", str(out)))) == 0
    printed = capsys.readouterr().out
    assert "real vs Deepfakes" in printed and "frame BOSC" in printed and str(out) in printed
    for name in ("metrics.json", "predictions.parquet", "roc.png", "confusion.png"):
        assert (out / name).is_file(), name
    for name in ("roc.png", "confusion.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not (checkpoint.parent / "last.eval-test.json").exists()  # --out replaces it

    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    metrics = json.loads(text)
    assert metrics["shards"] == [str(builds["ffpp"])] and metrics["split"] == "test" and metrics["crop"] == 32
    assert metrics["class_names"] == FFPP_NAMES and metrics["real_classes"] == ["pristine"]
    # Shards written without a build (no manifest.toml above them): said, not compared.
    (note,) = metrics["notes"]
    assert note.startswith(f"{builds['ffpp']}: not compared with the data the checkpoint was trained on")
    assert metrics["checkpoint"] == str(checkpoint)
    ffpp = metrics["datasets"]["ffpp"]
    assert set(ffpp["methods"]) == {"Deepfakes", "Face2Face"} and ffpp["real_labels"] == [0]
    assert ffpp["loss"] > 0  # the build's classes are the checkpoint's

    predictions = pq.read_table(out / "predictions.parquet")
    assert predictions.schema == PREDICTIONS_SCHEMA
    table = predictions.to_pylist()
    assert len(table) == 10 and metrics["frames"] == 10 and metrics["videos"] == 5
    assert {row["video"] for row in table} == {key.rsplit("_", 1)[0] for key, *_ in ffpp_samples()["test"]}
    assert {(row["frame_index"], row["track"]) for row in table} == {(0, 0), (1, 0)}
    assert all(row["dataset"] == "ffpp" and row["fake"] == (row["label"] != 0) for row in table)
    expected = fake_scores(checkpoint, builds["ffpp"], real=0)  # 1 - p(pristine)
    assert all(row["score"] == pytest.approx(expected[row["sample"]], abs=1e-6) for row in table)

    # The metrics are scikit-learn's on the predictions: per method (reals against its fakes), per video.
    for method, values in ffpp["methods"].items():
        subset = [row for row in table if not row["fake"] or row["method"] == method]
        truth, scores = [row["fake"] for row in subset], [row["score"] for row in subset]
        assert values["frame"]["auc"] == pytest.approx(roc_auc_score(truth, scores))
        assert values["frame"]["ap"] == pytest.approx(average_precision_score(truth, scores))
        videos: dict[str, list] = {}
        for row in subset:
            videos.setdefault(row["video"], []).append(row)
        truth = [rows[0]["fake"] for rows in videos.values()]
        means = [np.mean([row["score"] for row in rows]) for rows in videos.values()]
        assert values["video"]["auc"] == pytest.approx(roc_auc_score(truth, means))
        assert values["video"]["videos"] == len(videos)
    assert metrics["frame_auc"] == ffpp["pooled"]["frame"]["auc"]


def test_a_binary_build_scored_with_a_five_class_checkpoint(builds, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cross"
    assert main(eval_args(checkpoint, builds["ffpp"], builds["celebdf"], more=("--out", str(out)))) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"ffpp", "celebdf-v2"}  # keys sorted in the file
    celebdf = metrics["datasets"]["celebdf-v2"]
    assert celebdf["labels"] == {"0": "real", "1": "fake"} and celebdf["real_labels"] == [0]
    assert list(celebdf["methods"]) == ["Celeb-synthesis"]
    assert celebdf["pooled"]["video"]["real"] == 2 and celebdf["pooled"]["video"]["fake"] == 2
    assert celebdf["loss"] is None and metrics["loss"] is None  # another class map: no cross-entropy
    assert metrics["frames"] == 18 and metrics["pooled"]["video"]["videos"] == 9
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    expected = fake_scores(checkpoint, builds["celebdf"], real=0)  # 1 - p(pristine) of the FF++ classes
    celebdf_rows = [row for row in table if row["dataset"] == "celebdf-v2"]
    assert len(celebdf_rows) == 8
    assert all(row["score"] == pytest.approx(expected[row["sample"]], abs=1e-6) for row in celebdf_rows)


def test_the_real_class_is_found_by_its_name(builds, checkpoint: Path, tmp_path: Path, capsys) -> None:
    # The same weights, their classes named with pristine second: the fake score is 1 - p(class 1).
    renamed = with_metadata(
        checkpoint,
        tmp_path / "renamed" / "last.safetensors",
        class_names=json.dumps(["Deepfakes", "pristine", "a", "b", "c"]),
    )
    assert main(eval_args(renamed, builds["celebdf"])) == 0
    written = json.loads((renamed.parent / "last.eval-test.json").read_text())  # no --out: beside it
    assert written["real_classes"] == ["pristine"] and written["frame_auc"] is not None
    # An older checkpoint without class names: class 0, and a note says so.
    older = with_metadata(checkpoint, tmp_path / "older" / "last.safetensors", class_names=None)
    out = tmp_path / "older-out"
    assert main(eval_args(older, builds["celebdf"], more=("--out", str(out)))) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "class 0 is taken as real" in metrics["notes"][0]
    assert "note:" in capsys.readouterr().out
    expected = fake_scores(checkpoint, builds["celebdf"], real=0)
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert all(row["score"] == pytest.approx(expected[row["sample"]], abs=1e-6) for row in table)
    renamed_out = tmp_path / "renamed-out"
    assert main(eval_args(renamed, builds["celebdf"], more=("--out", str(renamed_out)))) == 0
    expected = fake_scores(checkpoint, builds["celebdf"], real=1)
    table = pq.read_table(renamed_out / "predictions.parquet").to_pylist()
    assert all(row["score"] == pytest.approx(expected[row["sample"]], abs=1e-6) for row in table)


def test_class_maps_that_cannot_be_reconciled_are_one_line(
    builds, checkpoint: Path, tmp_path: Path, capfd
) -> None:
    animals = with_metadata(
        checkpoint,
        tmp_path / "animals" / "last.safetensors",
        class_names=json.dumps(["cat", "dog", "a", "b", "c"]),
    )
    assert main(eval_args(animals, builds["celebdf"])) == 1
    line = one_error_line(capfd)
    assert str(animals) in line and "none of its classes (cat, dog, a, b, c) is named" in line
    # A build whose classes are named, none like real: refused before any shard is hashed.
    unmapped = write_build(tmp_path / "unmapped" / "shards", celebdf_samples(("cat", "dog")))
    copy = tmp_path / "copy" / "last.safetensors"
    copy.parent.mkdir()
    shutil.copy(checkpoint, copy)
    assert main(eval_args(copy, unmapped)) == 1
    line = one_error_line(capfd)
    assert f"{unmapped}: none of its classes (0 cat, 1 dog)" in line and "cannot tell its real" in line
    assert not (copy.parent / SHARD_CHECKS).exists()
    # A video whose frames carry different labels.
    samples = celebdf_samples()
    key, _, meta = samples["test"][-1]
    samples["test"][-1] = (key, 0, meta | {"label": 0, "label_name": "real"})
    disagreeing = write_build(tmp_path / "disagreeing" / "shards", samples)
    assert main(eval_args(copy, disagreeing)) == 1
    line = one_error_line(capfd)
    assert "the frames of video 'Celeb-synthesis_id1_id0_0000' disagree on its label (1 and 0)" in line


def test_user_text_is_escaped_and_unlabelled_samples_left_out(
    builds, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    samples = celebdf_samples()
    samples["test"] = [
        (key, label, meta | {"dataset": "[bold]odd", "method": "[red]M" if label else meta["method"]})
        for key, label, meta in samples["test"]
    ]
    samples["test"] += video_samples("[bold]odd", "unlabelled_0000", -1, "unknown", "unknown")
    odd = write_build(tmp_path / "odd" / "shards", samples)
    out = tmp_path / "out"
    assert main(eval_args(checkpoint, odd, more=("--out", str(out)))) == 0
    printed = capsys.readouterr().out
    assert "[bold]odd" in printed and "real vs [red]M" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["notes"][-1] == "[bold]odd: 2 unlabelled samples (label -1) left out"
    assert metrics["frames"] == 8 and metrics["datasets"]["[bold]odd"]["labels"] == {"0": "real", "1": "fake"}
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(table) == 10 and [row["fake"] for row in table if row["label"] == -1] == [None, None]


# ---------------------------------------------------------------- training's validation, per method


def test_validation_logs_per_method_metrics_as_ffx_eval_computes_them(tmp_path: Path) -> None:
    """metrics.jsonl carries, next to the pooled figures, each method's metrics (its fakes against
    every real) equal to `method_metrics` on the checkpoint's predictions for the same split."""
    samples = ffpp_samples()
    val = [(key, label, meta | {"split": "val"}) for key, label, meta in samples["test"]]
    shards = write_build(tmp_path / "ffpp" / "shards", {"train": samples["train"], "val": val})
    run = tmp_path / "run"
    config = make_config(
        shards=str(shards), run=str(run), epochs=1, steps_per_epoch=1, freeze_epochs=0, workers=0, **TINY
    )
    train(config, show_progress=False)
    (line,) = [json.loads(text) for text in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(line["val_methods"]) == {"Deepfakes", "Face2Face"}
    for method in ("Deepfakes", "Face2Face"):
        levels = line["val_methods"][method]
        assert levels["frame"]["real"] == 4 and levels["video"]["real"] == 2  # every real, both levels
        assert set(levels["frame"]) == {"bosc", "auc", "acc", "eer", "ap", "real", "fake", "frames"}
    assert line["val_methods"]["Face2Face"]["video"]["fake"] == 1
    assert line["val_frames"] == 10 and line["val_videos"] == 5 and line["val_video_auc"] is not None

    # The same predictions, from ffx eval of the checkpoint on the same split.
    out = tmp_path / "eval"
    arguments = ["eval", "--checkpoint", str(run / "last.safetensors"), "--shards", str(shards)]
    assert main([*arguments, "--split", "val", "--out", str(out), "--device", "cpu", "--workers", "1"]) == 0
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert (
        json.loads((out / "metrics.json").read_text())["datasets"]["ffpp"]["methods"] == line["val_methods"]
    )
    for method in ("Deepfakes", "Face2Face"):  # each method's reals-against-its-fakes, counted here
        chosen = [row for row in rows if not row["fake"] or row["method"] == method]
        frame_auc = pair_auc([row["fake"] for row in chosen], [row["score"] for row in chosen])
        videos: dict[str, list] = {}
        for row in chosen:
            videos.setdefault(row["video"], [row["fake"]]).append(row["score"])
        video_auc = pair_auc([v[0] for v in videos.values()], [np.mean(v[1:]) for v in videos.values()])
        levels = line["val_methods"][method]
        assert levels["frame"]["auc"] == pytest.approx(frame_auc, abs=1e-12)
        assert levels["video"]["auc"] == pytest.approx(video_auc, abs=1e-12)
        assert levels["frame"]["fake"] == sum(1 for row in chosen if row["fake"])
    pooled = detection_metrics(
        [int(row["fake"]) for row in rows], [row["score"] for row in rows], [row["video"] for row in rows]
    )
    assert line["val_video_auc"] == pytest.approx(pooled["video_auc"])
    assert line["val_frame_bosc"] == pytest.approx(pooled["frame_bosc"])
