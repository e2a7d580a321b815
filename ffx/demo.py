"""`ffx demo`: the pipeline end to end on generated clips, on a CPU, in a few minutes: build the
shards, train a small detector from scratch, evaluate it on the held-out test split, apply it
(`ffx predict`) to a test clip and to an image without a face, and show what it looks at
(`ffx explain`: a Grad-CAM sheet per class and a t-SNE of its features).

Everything lands under one work folder, and a rerun reuses what is there: the build finds its
work done; a finished run is not trained again (an interrupted one goes on, as `ffx train
--resume`); the evaluation is redone only when its metrics.json is missing or older than the
checkpoint. Delete the folder to start over."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import BuildReport, run_build
from ffx.synthetic import faceless_picture, portrait_frames, write_h264_video

DEMO_VIDEOS = {"real": 12, "fake": 12}
DEMO_FRAMES = 40
# What the demo trains: a small timm backbone from scratch (no download), at a small crop, on the
# CPU, seeded. The backbone learns from the first step (no frozen epochs: it has no weights yet).
# The samples are read in the training process (`workers` 0): the same batches on any machine,
# whatever its core count, and no loader processes competing with training for a small CPU.
DEMO_TRAINING = {
    "backbone": "resnet18",
    "spaces": "rgb",
    "crop": 112,
    "epochs": 5,
    "classes_per_batch": 2,
    "images_per_class": 8,
    "lr": 0.01,
    "freeze_epochs": 0,
    "device": "cpu",
    "workers": 0,
    "seed": 0,
}
EVAL_SPLIT = "test"


@dataclass
class DemoReport:
    """Where the demo put its data, build, run and evaluation, and what each step reported.

    `trained`: whether this call trained (False: the run was finished already); `evaluated`:
    whether it scored the checkpoint (False: the folder's metrics.json was current)."""

    data: Path
    build: BuildReport
    run: Path | None = None
    checkpoint: Path | None = None
    evaluation: Path | None = None
    metrics: dict | None = None
    train: object = None  # the TrainReport
    trained: bool = False
    evaluated: bool = False
    prediction: object = None  # the PredictReport of one test video and an image without a face
    explanation: object = None  # the ExplainReport of the test split (Grad-CAM sheets, t-SNE)


def make_demo_data(data: Path, frames: int = DEMO_FRAMES) -> Path:
    """Write the demo's real/ and fake/ clips (the bundled portrait, panned; fakes with an
    altered mouth; each clip its own seeded brightness and contrast) under `data`, keeping clips
    already there."""
    for label, count in DEMO_VIDEOS.items():
        for number in range(count):
            path = data / label / f"{label}_{number:02d}.mp4"
            if not path.is_file():
                seed = number if label == "real" else 1000 + number
                pictures = portrait_frames(frames, phase=number * 0.9, fake=label == "fake", seed=seed)
                write_h264_video(path, pictures)
    return data


def run_demo(
    workdir: Path,
    show_progress: bool = True,
    train: bool = True,
    on_build: Callable[[DemoReport], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> DemoReport:
    """Generate the demo clips under `workdir/data`, build them into `workdir/build`, and (with
    `train`) train in `workdir/run` and evaluate its last checkpoint on the test split into
    `workdir/eval-test` (metrics.json, predictions.parquet, roc.png, confusion.png). `on_build`
    is told the report once the build is done, before training; `warn` gets the trainer's
    warnings. Without `train`, or while the build waits for other parts, `run` stays None."""
    workdir = Path(workdir)
    data = make_demo_data(workdir / "data")
    build = run_build(load_manifest("demo"), data, workdir / "build", show_progress=show_progress)
    report = DemoReport(data, build)
    if train and not build.waiting:
        report.run = workdir / "run"
        report.checkpoint = report.run / "last.safetensors"
        report.evaluation = workdir / f"eval-{EVAL_SPLIT}"
    if on_build is not None:
        on_build(report)
    if report.run is None:
        return report
    shards = build.build / "shards"
    report.train, report.trained = train_demo(shards, report.run, show_progress, warn)
    report.metrics, report.evaluated = evaluate_demo(report.checkpoint, shards, report.evaluation)
    report.prediction = predict_demo(report.checkpoint, build.build, workdir)
    report.explanation = explain_demo(report.checkpoint, shards, workdir / "explain")
    return report


def explain_demo(checkpoint: Path, shards: Path, out: Path):
    """`ffx explain` of the test split: a Grad-CAM sheet per class and the t-SNE of the features."""
    from ffx.apply.explain import explain

    return explain(
        checkpoint,
        out,
        shards=shards,
        split=EVAL_SPLIT,
        per_class=4,
        methods=("gradcam",),
        device="cpu",
        show_progress=False,
    )


def predict_demo(checkpoint: Path, build: Path, workdir: Path):
    """`ffx predict` with the demo's detector on a fake test clip, as a user has it (a video file,
    no build), and on an image without a face, into `workdir/predict`."""
    import cv2
    import pyarrow.parquet as pq

    from ffx.apply.predict import predict

    videos = pq.read_table(build / "videos.parquet").to_pylist()
    root = json.loads((build / "index.json").read_text(encoding="utf-8"))["root"]
    clip = min(row["path"] for row in videos if row["split"] == EVAL_SPLIT and row["label_name"] == "fake")
    no_face = workdir / "predict-inputs" / "no_face.png"
    if not no_face.is_file():
        no_face.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(no_face), cv2.cvtColor(faceless_picture(), cv2.COLOR_RGB2BGR))
    return predict(
        checkpoint, [Path(root) / clip, no_face], workdir / "predict", device="cpu", show_progress=False
    )


def train_demo(shards: Path, run: Path, show_progress: bool, warn: Callable[[str], None] | None):
    """Train the demo's detector in `run`: a new run, the rest of an interrupted one, or nothing
    when it has finished. Returns the TrainReport and whether any step was trained."""
    from ffx.train.config import given_settings, make_config
    from ffx.train.logs import METRICS_FILE
    from ffx.train.loop import train
    from ffx.train.state import LAST

    options = {"warn": warn} if warn is not None else {}
    settings = given_settings(shards=str(shards), run=str(run), **DEMO_TRAINING)
    config = make_config(**settings)
    if (run / LAST).is_file():
        done = _last_logged_step(run / METRICS_FILE)
        report = train(config, resume=True, show_progress=show_progress, given=set(settings), **options)
        return report, report.step != done
    return train(config, show_progress=show_progress, given=set(settings), **options), True


def _last_logged_step(metrics: Path) -> int | None:
    """The step of the last line in a run's metrics.jsonl, if any."""
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1])["step"] if lines else None
    except (OSError, ValueError, KeyError):
        return None


def evaluate_demo(checkpoint: Path, shards: Path, out: Path) -> tuple[dict, bool]:
    """Score `checkpoint` on the test split into `out`, unless out/metrics.json is newer than it.
    Returns the metrics and whether they were computed now."""
    from ffx.train.evaluate import METRICS_FILE, evaluate_checkpoint

    metrics_file = out / METRICS_FILE
    if metrics_file.is_file() and metrics_file.stat().st_mtime >= checkpoint.stat().st_mtime:
        return json.loads(metrics_file.read_text(encoding="utf-8")), False
    metrics = evaluate_checkpoint(checkpoint, str(shards), EVAL_SPLIT, device="cpu", out=out)
    return metrics, True
