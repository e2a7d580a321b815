"""`ffx predict`: a checkpoint applied to videos and images as they are, no build needed.

Every input becomes face crops through the build's own code (`ffx.apply.inputs`), with the data
settings the checkpoint recorded (sampling, crop preset, size, min-prob, spaces, normalisation).
Each crop is then decoded as the shards' loader decodes a sample (`decode_sample`: the RGB PNG in,
the checkpoint's spaces and centre crop out) and scored as `ffx eval` scores it (`fake_scores`), so
a frame gets the score `ffx eval` gives the same frame through shards. Every frame gets a row: a
score, or the reason it has none (no face, low probability, a decode error).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ffx.apply.inputs import IMAGE, ImageTask, Input, find_inputs, prepare
from ffx.errors import FfxError
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.statuses import FAILED, BadInput, Status
from ffx.pipeline.engine.workers import Stalled, available_cores, call_guarded, run_tasks
from ffx.pipeline.media.detect import resolve_device
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.crop import CropStage
from ffx.pipeline.stages.extract import video_task
from ffx.pipeline.workers.extract import Extracted, VideoTask, rows_without_frames
from ffx.pipeline.workers.shard import sample_name

FRAMES_FILE, INPUTS_FILE, PREDICTIONS_FILE = "frames.csv", "inputs.csv", "predictions.json"
FRAME_FIELDS = ("input", "kind", "frame_index", "track", "status", "error", "face_prob", "score", "label")
INPUT_FIELDS = (
    "input",
    "kind",
    "status",
    "error",
    "frames",
    "faces",
    "score",
    "label",
    "tracks",
    "other_faces",
)
UNREADABLE = {status.value for status in FAILED if status != Status.PARTIAL}


@dataclass
class PredictReport:
    """What `ffx predict` found: a row per frame (and face), a row per input, and the files."""

    out: Path
    checkpoint: Path
    threshold: float
    frames: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    crops: list[dict] = field(default_factory=list)  # kept crops: input, key, frame_index, track, crop

    @property
    def readable(self) -> int:
        """Inputs that could be read (whether or not they showed a face)."""
        return sum(1 for row in self.inputs if row["status"] not in UNREADABLE)


def predict(
    checkpoint: Path,
    paths: list[Path],
    out: Path,
    *,
    threshold: float = 0.5,
    device: str = "auto",
    workers: int | None = None,
    batch_size: int = 32,
    stall_seconds: float = 60.0,
    show_progress: bool = True,
    crops_dir: Path | None = None,
) -> PredictReport:
    """Score every frame of `paths` (videos, images, folders of them) with `checkpoint` and write
    frames.csv, inputs.csv and predictions.json into `out`. With `crops_dir`, the face crops are
    kept there (`{key}/{frame:06d}.png`); else they live in a temporary folder."""
    from ffx.data import resolve_colour_on
    from ffx.model.checkpoint import checkpoint_metadata, describe_checkpoint, load_model, place
    from ffx.train.evaluate import checkpoint_classes

    if not 0.0 <= threshold <= 1.0:
        raise FfxError(f"--threshold must lie in [0, 1], got {threshold}")
    checkpoint = Path(checkpoint)
    description = describe_checkpoint(checkpoint)
    recipe = checkpoint_recipe(description)
    inputs = find_inputs(paths)
    for folder in (Path(out), *([Path(crops_dir)] if crops_dir else [])):
        _writable_folder(folder)  # before the work, not after it
    placement = place(device)
    model = load_model(checkpoint, placement.device)
    classes = checkpoint_classes(checkpoint_metadata(checkpoint), model.config.num_classes, checkpoint)
    colour_on = resolve_colour_on(description["colour_on"], placement.device)
    report = PredictReport(
        Path(out), checkpoint, threshold, settings=_settings(description, recipe, colour_on)
    )

    with tempfile.TemporaryDirectory(prefix="ffx-predict-") as temp:
        faces_root = Path(crops_dir) if crops_dir else Path(temp) / "faces"
        faces_root.mkdir(parents=True, exist_ok=True)
        extracted = _crop_inputs(
            inputs, recipe, faces_root, Path(temp), device, workers, stall_seconds, show_progress
        )
        crops = [
            (row, faces_root / Path(row["path"]).relative_to("faces"))
            for item in inputs
            for row in extracted[item.key].faces or []
            if row["path"]
        ]
        scores = _score_crops(
            model,
            placement.device,
            crops,
            classes.real,
            description["crop"],
            colour_on,
            batch_size,
            show_progress,
        )
    if crops_dir:
        path_of = {item.key: str(item.path) for item in inputs}
        report.crops = [
            {"input": path_of[row["key"]], "key": row["key"], "frame_index": row["frame_index"]}
            | {"track": row["track"], "crop": path}
            for row, path in crops
        ]
    for item in inputs:
        frames = _frame_rows(item, extracted[item.key], scores, threshold)
        report.frames += frames
        first = extracted[item.key].frames[0]
        report.inputs.append(_input_row(item, frames, threshold, (first["status"], first["error"])))
    write_predictions(report)
    return report


def _score_crops(
    model,
    device: torch.device,
    crops: list[tuple[dict, Path]],
    real: Sequence[int],
    crop: int | None,
    colour_on: str,
    batch_size: int,
    show_progress: bool,
) -> dict[tuple[str, int, int], float]:
    """The fake score of each face crop (1 - p(`real` classes)), by (input key, frame, track):
    the crops decoded and centre-cropped to `crop` as the checkpoint's input says, in batches."""
    from ffx.data import decode_sample, loader_spaces
    from ffx.model.checkpoint import model_images
    from ffx.train.evaluate import fake_scores

    spaces = model.config.spaces
    real_index = torch.tensor(list(real), device=device)
    mean, std = model.config.mean, model.config.std
    scores: dict[tuple[str, int, int], float] = {}
    with (
        stage_progress("score", len(crops), "crops", "batches", show_progress) as progress,
        torch.no_grad(),
    ):
        for start in range(0, len(crops), batch_size):
            batch = crops[start : start + batch_size]
            images = torch.stack(
                [
                    decode_sample(sample_for(row, path), loader_spaces(spaces, colour_on), crop)["image"]
                    for row, path in batch
                ]
            )
            logits = model(model_images(images, device, spaces, colour_on, mean, std))
            for (row, _path), score in zip(batch, fake_scores(logits, real_index)):
                scores[(row["key"], row["frame_index"], row["track"])] = score
            progress.advance(len(batch), 1)
    return scores


def _writable_folder(folder: Path) -> None:
    """Make `folder` (an output folder), or one line saying why it cannot be."""
    if folder.exists() and not folder.is_dir():
        raise FfxError(f"{folder} is a file, not a folder: give --out a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ffx-probe-"):
            pass
    except OSError as error:
        raise FfxError(f"{folder}: cannot write there ({error.strerror}); choose another --out") from None


def checkpoint_recipe(description: dict):
    """The recipe a checkpoint's data settings make (sampling and `[crop]`), on the bundled
    `folder` recipe's defaults; one line when the checkpoint does not record them."""
    data = description["data_recipe"]
    if not data.get("known"):
        raise FfxError(
            f"{description['checkpoint']} does not record how its training data was made "
            f"({data.get('reason', 'no data recipe')}): ffx predict needs a checkpoint written by "
            "`ffx train` on an ffx build"
        )
    overrides = {"sampling": data["sampling"], "spaces": data["spaces"]}
    overrides |= {f"crop.{name}": value for name, value in data["crop"].items() if value is not None}
    overrides["crop.boxes_from_original"] = False  # an input has no original to borrow boxes from
    # Every face is cropped and scored; the input's verdict is its main face's (track 0, as a build
    # without all_faces keeps), the other faces are reported beside it, none dropped.
    overrides["crop.all_faces"] = True
    return load_manifest("folder", overrides)


def _settings(description: dict, recipe, colour_on: str) -> dict:
    return {
        "sampling": recipe.sampling,
        "crop": recipe.crop.model_dump(mode="json"),
        "spaces": list(description["spaces"]),
        "input_crop": description["crop"],
        "colour_on": colour_on,
        "classes": description["classes"],
    }


def _crop_inputs(
    inputs: list[Input],
    recipe,
    faces_root: Path,
    temp: Path,
    device: str,
    workers: int | None,
    stall_seconds: float,
    show_progress: bool,
) -> dict[str, Extracted]:
    """Every input's frames and crop rows, in worker processes (one per core on a CPU)."""
    stage = CropStage(resolve_device(device))
    job = stage.job(recipe)
    processes = workers or (1 if stage.device.startswith("cuda") else available_cores())
    threads = max(1, available_cores() // processes)
    tasks: list[VideoTask | ImageTask] = [
        ImageTask(item.key, str(item.path), str(faces_root), job)
        if item.kind == IMAGE
        else video_task(item.key, item.path, temp / "frames", faces_root, recipe, threads, job)
        for item in inputs
    ]
    (temp / "frames").mkdir(exist_ok=True)
    results: dict[str, Extracted] = {}
    function = functools.partial(call_guarded, prepare)
    with stage_progress("crop", len(tasks), "inputs", "inputs", show_progress) as progress:
        for task, result in run_tasks(function, tasks, processes, stall_seconds):
            if isinstance(result, Stalled):
                status = Status.TIMEOUT if result.hung else Status.ERROR
                result = Extracted(rows_without_frames(task.key, status, f"worker: {result.reason}"), [])
            elif isinstance(result, BadInput):
                result = Extracted(rows_without_frames(task.key, result.status, str(result)), [])
            results[task.key] = result
            progress.advance(1, 1)
    return results


def sample_for(row: dict, path: Path) -> dict:
    """A crop as the raw WebDataset sample `ffx shard` would make of it (its RGB PNG)."""
    return {
        "__key__": sample_name(row["key"], row["frame_index"], row["track"]),
        "rgb.png": path.read_bytes(),
        "cls": b"-1",
        "json": b"{}",
    }


def _label(score: float | None, threshold: float) -> str:
    return "" if score is None else ("fake" if score >= threshold else "real")


def _frame_rows(item: Input, extracted: Extracted, scores: dict, threshold: float) -> list[dict]:
    """One row per frame and face: the face's score, or why the frame has none."""
    base = {"input": str(item.path), "kind": item.kind}
    if extracted.faces is None or not extracted.faces:  # no frame came out of the input
        frame = extracted.frames[0]
        return [
            base
            | {"frame_index": None, "track": None, "status": frame["status"], "error": frame["error"]}
            | {"face_prob": None, "score": None, "label": ""}
        ]
    rows = []
    for face in extracted.faces:
        score = scores.get((face["key"], face["frame_index"], face.get("track")))
        rows.append(
            base
            | {
                "frame_index": face["frame_index"],
                "track": face["track"] if face["track"] >= 0 else None,
                "status": face["status"],
                "error": face["error"],
                "face_prob": face.get("prob"),
                "score": score,
                "label": _label(score, threshold),
            }
        )
    return rows


def _input_row(item: Input, frames: list[dict], threshold: float, video_status: tuple[str, str]) -> dict:
    """An input's verdict: the mean score of its main face's scored frames (the video score
    `ffx eval` reports; the main face is the track a build keeps: the largest of the faces seen
    in most frames), or the commonest reason its frames have none; `other_faces`: each other
    face track's mean score and frames ("1: 0.812 over 30 frames; 2: ...")."""
    by_track: dict[int, list[float]] = {}
    for row in frames:
        if row["score"] is not None:
            by_track.setdefault(row["track"] or 0, []).append(row["score"])
    scored = by_track.get(0, [])
    score = sum(scored) / len(scored) if scored else None
    others = "; ".join(
        f"{track}: {sum(values) / len(values):.3f} over {len(values)} frames"
        for track, values in sorted(by_track.items())
        if track != 0
    )
    if scored:  # the video's own status (partial, short: a cut file) where it is not ok
        status, error = video_status
    elif by_track:  # other faces were scored, the main one was not: no verdict, said so
        status, error = "error", "the main face (track 0) has no scored frame; see other_faces"
    else:
        (status, error), _count = Counter((row["status"], row["error"]) for row in frames).most_common(1)[0]
    counted = {row["frame_index"] for row in frames if row["frame_index"] is not None}
    return {
        "input": str(item.path),
        "kind": item.kind,
        "status": status,
        "error": error,
        "frames": len(counted),
        "faces": len(scored),
        "score": score,
        "label": _label(score, threshold),
        "tracks": len(by_track),
        "other_faces": others,
    }


def write_predictions(report: PredictReport) -> None:
    """frames.csv and inputs.csv (one row per frame and face, per input) and predictions.json
    (both, with the checkpoint and the settings used), each written atomically."""
    report.out.mkdir(parents=True, exist_ok=True)
    for name, fields, rows in (
        (FRAMES_FILE, FRAME_FIELDS, report.frames),
        (INPUTS_FILE, INPUT_FIELDS, report.inputs),
    ):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_bytes(report.out / name, text.getvalue().encode())
    record = {
        "checkpoint": str(report.checkpoint),
        "threshold": report.threshold,
        "settings": report.settings,
        "inputs": report.inputs,
        "frames": report.frames,
    }
    atomic.write_bytes(report.out / PREDICTIONS_FILE, json.dumps(record, indent=1).encode())
