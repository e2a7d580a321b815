"""`ffx demo` end to end, once per session (about a minute on 2 cores): the build, a detector
trained from scratch that separates the held-out test clips, and a rerun that redoes nothing."""

from __future__ import annotations

import json
import socket
from collections import Counter

import cv2
import numpy as np
import pyarrow.parquet as pq

from ffx.demo import DEMO_VIDEOS
from ffx.pipeline.engine.machine import cpu_kernels
from ffx.synthetic import PORTRAIT, PORTRAIT_FACE, alter_mouth
from tests.conftest import run_cli

VIDEOS = sum(DEMO_VIDEOS.values())
FRAMES = 30  # the demo recipe's sampling, first:30


def test_fakes_differ_from_reals_on_the_mouth_only():
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    changed = np.abs(alter_mouth(portrait).astype(int) - portrait).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = PORTRAIT_FACE
    face = (x2 - x1) * (y2 - y1)
    # Inside the face box, below the eyes, and a fifth of the face or less: no global tint or blur.
    assert x1 < xs.min() and xs.max() < x2 and y1 + (y2 - y1) / 2 < ys.min() and ys.max() < y2
    assert 0.1 * face < changed.sum() < 0.3 * face


def test_demo_builds_both_labels_into_every_split(demo):
    workdir, out = demo
    build = workdir / "build"
    rows = pq.read_table(build / "videos.parquet").to_pylist()
    assert Counter(row["label_name"] for row in rows) == DEMO_VIDEOS
    assert min(DEMO_VIDEOS.values()) >= 10
    by_split = Counter((row["split"], row["label_name"]) for row in rows)
    assert by_split == {
        (split, label): count
        for split, count in {"train": 6, "val": 2, "test": 4}.items()
        for label in ("real", "fake")
    }
    frames = pq.read_table(build / "frames.parquet").to_pylist()
    assert len(frames) == VIDEOS * FRAMES and {row["status"] for row in frames} == {"ok"}
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    assert len(faces) == VIDEOS * FRAMES and {row["status"] for row in faces} == {"ok"}
    assert {row["track"] for row in faces} == {0} and all(row["prob"] > 0.99 for row in faces)
    total = VIDEOS * FRAMES
    assert "demo build" in out and f"this run: videos ok {VIDEOS}; frames ok {total} ({total} decoded)" in out
    assert f"{total} faces cropped" in out and f"{VIDEOS} already current" in out  # in the one pass
    index = json.loads((build / "shards/index.json").read_text())
    assert {split: totals["samples"] for split, totals in index["splits"].items()} == {
        split: FRAMES * sum(1 for row in rows if row["split"] == split) for split in ("train", "val", "test")
    }
    record = json.loads((build / "build.json").read_text())
    assert record["shards"] == {entry["name"]: entry["sha256"] for entry in index["shards"]}
    assert record["inputs"]["files"] == VIDEOS and record["inputs"]["missing"] == 0
    assert set(record["seconds"]) == {"frames+faces", "samples", "shards"}  # one decode per frame
    here = {"host": socket.gethostname(), "cpu_kernels": cpu_kernels()}
    assert record["made_on"] == {
        "frames+faces": [here | {"device": "cpu"}],
        "samples": [here],
        "shards": [here],
    }


def test_demo_detector_separates_the_test_split(demo):
    workdir, out = demo
    run, evaluation = workdir / "run", workdir / "eval-test"
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "resnet18" and config["device"] == "cpu" and config["pretrained"] is None
    assert (run / "last.safetensors").is_file()
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["checkpoint"] == str(run / "last.safetensors")
    assert metrics["frames"] == 8 * FRAMES and metrics["videos"] == 8
    assert metrics["frame_auc"] >= 0.9, metrics["pooled"]
    for name in ("roc.png", "confusion.png", "predictions.parquet"):
        assert (evaluation / name).stat().st_size > 0
    # Scored on held-out clips only: no test video was trained on.
    videos = pq.read_table(workdir / "build/videos.parquet").to_pylist()
    test = {row["key"] for row in videos if row["split"] == "test"}
    predictions = pq.read_table(evaluation / "predictions.parquet").to_pylist()
    assert {row["video"] for row in predictions} == test
    assert f"train: step {config['epochs'] * config['steps_per_epoch']} of" in out
    assert "ffx eval test" in out and "real vs fake" in out
    for path in (workdir / "build", run, run / "last.safetensors", evaluation, evaluation / "roc.png"):
        assert str(path) in out


def test_demo_rerun_redoes_nothing(demo):
    workdir, _ = demo
    outputs = [
        *sorted((workdir / "build/shards").glob("*.tar")),
        workdir / "run/last.safetensors",
        workdir / "run/metrics.jsonl",
        workdir / "eval-test/metrics.json",
    ]
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in outputs}
    code, out = run_cli(["demo", "--workdir", str(workdir)])
    assert code == 0, out
    assert out.count(f"{VIDEOS} already current") == 3
    assert "not trained again" in out and "metrics.json is newer than the checkpoint" in out
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in outputs} == before

    # `ffx build` over the finished demo build: every stage finds its work done, nothing changes.
    arguments = ["build", "demo", "--root", str(workdir / "data"), "--build", str(workdir / "build")]
    code, out = run_cli(arguments)
    assert code == 0 and out.count(f"{VIDEOS} already current") == 3 and "shards written" not in out
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in outputs} == before
    assert run_cli(["verify", str(workdir / "build")])[0] == 0
