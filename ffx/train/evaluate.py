"""`ffx eval`: a checkpoint scored on a split of one build or several, as the paper reports it.

Every sample gets a fake score, 1 - p(real): the probability of the checkpoint's class named
pristine or real (`class_names` in its metadata; a checkpoint written before ffx recorded them
is read with class 0 as real, and a note says so). The scored build's labels are read as real
(its class named real or pristine; class 0 when its samples carry no label names) or fake, so a
binary build (real/fake, Celeb-DF) is scored with a five-class FF++ checkpoint the same way as
FF++ itself. Metrics (`ffx.train.metrics.binary_metrics`: BOSC, AUC, ACC, EER, AP) come at frame
and video level (a video's score is the mean of its frames'), for each build pooled and for each
manipulation method (the build's reals against that method's fakes), and pooled over all builds.

The checkpoint is applied as its own metadata says (`ffx.model.checkpoint.describe_checkpoint`: colour
spaces and where they were made, centre crop, normalisation, classes): nothing of the run that
trained it (its config.json, its training shards) is read. metrics.json names the build it was
trained on (`trained_on`: its data recipe and the recipe's sha256, or why that is unknown).

With `out`, the folder gets metrics.json, predictions.parquet (a row per sample), roc.png and
confusion.png; without it, the metrics go to `{checkpoint stem}.eval-{split}.json` beside the
checkpoint, as before.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from ffx.data import (
    SHARD_CHECKS,
    check_shard_files,
    check_spaces,
    open_shards,
    resolve_colour_on,
    shard_dataset,
    shard_loader,
)
from ffx.errors import BuildError, FfxError
from ffx.model.checkpoint import (
    EXPECTED_CHECKPOINT,
    are_placeholders,
    checkpoint_metadata,
    describe_checkpoint,
    load_model,
    model_images,
    place,
    placeholder_names,
)
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.progress import stage_progress
from ffx.pipeline.engine.store import write_table
from ffx.pipeline.recipe.schema import REAL_NAMES, is_real_name
from ffx.train.data_match import check_scored_data
from ffx.train.metrics import (
    THRESHOLD,
    dataset_metrics,
    level_metrics,
    mark_rows,
    nan_to_none,
    split_label_names,
)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
ROC_FILE = "roc.png"
CONFUSION_FILE = "confusion.png"
LEVELS = ("frame", "video")
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("video", pa.string()),
        ("frame_index", pa.int64()),
        ("track", pa.int64()),
        ("sample", pa.string()),
        ("label", pa.int64()),
        ("label_name", pa.string()),
        ("method", pa.string()),
        ("fake", pa.bool_()),
        ("score", pa.float64()),
    ]
)
_REAL_WORDS = " or ".join(REAL_NAMES)


# ---------------------------------------------------------------- class maps


@dataclass(frozen=True)
class CheckpointClasses:
    """The checkpoint's class names (index = class) and which of them are real."""

    names: list[str]
    real: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether the names were recorded (not assumed)."""
        return not self.notes


def checkpoint_classes(metadata: dict[str, str], classes: int, checkpoint: Path) -> CheckpointClasses:
    """The class names a checkpoint records and its real classes. Without names (a checkpoint
    written before ffx recorded them, or trained on shards without label names) class 0 is real,
    with a note; names of which none is real or pristine are refused in one line."""
    raw = metadata.get("class_names")
    names = None
    if raw is not None:
        try:
            names = json.loads(raw)
        except ValueError:
            names = None
        if not (isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names)):
            raise FfxError(
                f"{checkpoint}: the class names in its metadata are unreadable or are not {classes} "
                f"names; {EXPECTED_CHECKPOINT}"
            )
    if names is not None and not are_placeholders(names):
        real = model_real_classes(names)
        if not real:
            raise FfxError(
                f"{checkpoint}: none of its classes ({', '.join(names)}) is named {_REAL_WORDS}, so its "
                "fake score 1 - p(real) is undefined; evaluate a checkpoint trained on shards whose real "
                "class is named real or pristine (the [labels] names of the recipe)"
            )
        return CheckpointClasses(names, real)
    why = (
        "records no class names (written before ffx recorded them)"
        if names is None
        else "was trained on shards whose samples carry no label names"
    )
    note = f"the checkpoint {why}: class 0 is taken as real (pristine), fake score = 1 - p(class 0)"
    return CheckpointClasses(names or placeholder_names(classes), (0,), (note,))


def model_real_classes(names: Sequence[str]) -> tuple[int, ...]:
    """A model's real classes by its class names (index = class): those named real or pristine;
    class 0 when the names are placeholders (unknown); () when named but none is real."""
    if are_placeholders(names):
        return (0,)
    return tuple(index for index, name in enumerate(names) if is_real_name(name))


def build_real_labels(names: dict[int, str | None], labels: Sequence[int], where: str) -> set[int]:
    """The labels of a scored build read as real: those named real, pristine or original, or
    label 0 when the build's samples carry no label names. Unlabelled samples (-1) are neither.
    A build whose classes are named but none like real cannot be mapped: one line."""
    labelled = sorted({label for label in labels if label >= 0})
    named = {label: names[label] for label in labelled if names.get(label)}
    if not named:
        return {0} & set(labelled) if labelled else {0}
    real = {label for label, name in named.items() if is_real_name(name)}
    if not real:
        listing = ", ".join(f"{label} {name}" for label, name in sorted(named.items()))
        raise FfxError(
            f"{where}: none of its classes ({listing}) is named {_REAL_WORDS}: cannot tell its real "
            "samples from its fakes; index the build with its real class named real or pristine"
        )
    return real | ({0} if 0 in labelled and 0 not in named else set())


def _labels_named(where: str, shards: str, split: str) -> None:
    """Refuse a build whose classes cannot be mapped before any image is scored: its label names
    come from the samples' JSON (tar headers only); refused only when every class is named."""
    shard_set = open_shards(shards, split)
    labels = [label for label, count in shard_set.labels.items() if label >= 0 and count > 0]
    if not labels:
        return
    names = split_label_names(shards, split, labels)
    if set(labels) <= set(names):
        build_real_labels(names, labels, where)


# ---------------------------------------------------------------- scoring


@torch.no_grad()
def score_split(
    model,
    shards: str,
    split: str,
    crop: int | None,
    device: torch.device,
    workers: int,
    real: Sequence[int],
    show_progress: bool = False,
    colour_on: str = "host",
) -> list[dict]:
    """One row per sample of the split: its metadata, label, fake score (1 - p(real classes),
    centre crop, no pairs) and the cross-entropy of its label (`nll`, NaN outside the classes).
    `colour_on`: where the colour spaces are made (`device`, `host`; see `ffx.data`)."""
    model.eval()
    shard_set = open_shards(shards, split)
    spaces = model.config.spaces
    dataset = shard_dataset(shards, split, spaces, crop, train=False, split_nodes=False, colour_on=colour_on)
    workers = min(workers, len(shard_set.urls))  # a worker without a shard idles
    real_index = torch.tensor(list(real), device=device)
    # The model's own input normalisation (per channel where its config gives it), as in training.
    mean, std = getattr(model.config, "mean", 0.5), getattr(model.config, "std", 0.5)
    rows: list[dict] = []
    total = shard_set.samples if shard_set.samples > 0 else None
    loader = shard_loader(dataset, batch_size=32, workers=workers, pin_memory=device.type == "cuda")
    with stage_progress(f"eval {split}", total, "samples", "batches", show_progress) as progress:
        for batch in loader:
            logits = model(model_images(batch["image"], device, spaces, colour_on, mean, std)).double()
            scores = fake_scores(logits, real_index)
            target = batch["label"].to(device)
            known = (target >= 0) & (target < logits.shape[1])
            nll = torch.full((len(target),), math.nan, dtype=torch.float64, device=device)
            if known.any():
                nll[known] = F.cross_entropy(logits[known], target[known], reduction="none")
            for key, label, meta, score, loss in zip(
                batch["key"], batch["label"].tolist(), batch["meta"], scores, nll.cpu().tolist()
            ):
                rows.append(
                    {
                        "sample": key,
                        "video": str(meta.get("video", key)),
                        "video_named": "video" in meta,  # else each sample is its own video
                        "frame_index": _integer(meta.get("frame_index")),
                        "track": _integer(meta.get("track")),
                        "label": label,
                        "label_name": meta.get("label_name"),
                        "method": meta.get("method"),
                        "dataset": meta.get("dataset"),
                        "score": score,
                        "nll": loss,
                    }
                )
            progress.advance(len(target), 1)
    if not rows:
        raise BuildError(f"the {split} split in {shards} is empty")
    return rows


def fake_scores(logits: torch.Tensor, real_index: torch.Tensor) -> list[float]:
    """1 - p(real classes) per row of a batch's logits (in float64): the fake score."""
    return (1 - torch.softmax(logits.double(), dim=1).index_select(1, real_index).sum(1)).cpu().tolist()


def _integer(value) -> int | None:
    return value if isinstance(value, int) else None


# ---------------------------------------------------------------- metrics


def _dataset_name(rows: list[dict], shards: str, taken: set[str]) -> str:
    """The samples' `dataset` (the build's folder name when they carry none), made unique."""
    folder = Path(shards)
    build = folder.resolve().parent.name if folder.is_dir() else str(shards)
    counts = Counter(row["dataset"] for row in rows if row["dataset"])
    base = counts.most_common(1)[0][0] if counts else build
    name, number = base, 2
    if name in taken:
        name = f"{base} ({build})"
    while name in taken:
        name, number = f"{base} #{number}", number + 1
    return name


def _map_labels(rows: list[dict], where: str) -> tuple[dict[int, str | None], set[int]]:
    """Set each row's `fake` (None when unlabelled) and `method` (the label name, or real/fake,
    when the sample names none); the build's label names and real labels."""
    names: dict[int, str | None] = {}
    for row in rows:
        if row["label"] >= 0 and names.get(row["label"]) is None:
            names[row["label"]] = row["label_name"]
    real = build_real_labels(names, [row["label"] for row in rows], where)
    mark_rows(rows, real)
    return names, real


def _loss(rows: list[dict], names: dict[int, str | None], classes: CheckpointClasses) -> float | None:
    """Mean cross-entropy of the labelled frames when the build's classes are the checkpoint's
    (same index, same name where both are named); None for another class map."""
    for label, name in names.items():
        if label >= len(classes.names):
            return None
        if name and classes.known and name != classes.names[label]:
            return None
    losses = [row["nll"] for row in rows if row["label"] >= 0 and not math.isnan(row["nll"])]
    return sum(losses) / len(losses) if losses else None


# ---------------------------------------------------------------- the command


def evaluate_checkpoint(
    checkpoint: Path,
    shards: str | Path | Sequence[str | Path],
    split: str = "test",
    crop: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    verify: bool = True,
    show_progress: bool = False,
    out: Path | None = None,
    colour_on: str | None = None,
) -> dict:
    """Metrics of a checkpoint on a split of one build or several (see the module's docstring),
    written to `out` (metrics.json, predictions.parquet, roc.png, confusion.png) or, without it,
    to `{checkpoint stem}.eval-{split}.json` beside the checkpoint. With `verify`, the split's
    shards are first checked against index.json; matches are remembered in shard-checks.json
    beside the checkpoint (its run folder, shared with training). Undefined metrics are None.
    `colour_on` (device, host, auto): where the colour spaces are made; None: where the run made
    them (the checkpoint's `input`), which gives the same bytes as the other way."""
    checkpoint = Path(checkpoint)
    builds = [str(shards)] if isinstance(shards, str | Path) else list(dict.fromkeys(map(str, shards)))
    if not builds:
        raise FfxError("ffx eval needs --shards (one or more builds' shards folders)")
    placement = place(device)
    model = load_model(checkpoint, placement.device)  # a wrong checkpoint is told before hashing
    metadata = checkpoint_metadata(checkpoint)
    classes = checkpoint_classes(metadata, model.config.num_classes, checkpoint)
    # How to apply the checkpoint comes from its metadata alone, never from its training run.
    description = describe_checkpoint(checkpoint)
    colour_on = resolve_colour_on(colour_on or description["colour_on"], placement.device)
    checks = checkpoint.parent / SHARD_CHECKS if verify else None
    _check_builds(builds, split, model.config.spaces, colour_on, checks, show_progress)
    crop = crop or description["crop"]
    workers = 2 if workers is None else workers

    notes = list(classes.notes)
    differences = {}
    for build in builds:  # refused here, before any image is read, when the crops are too small
        differences[build], said = check_scored_data(description["data_recipe"], build, crop)
        notes += said
    datasets: dict[str, dict] = {}
    scored: dict[str, list[dict]] = {}
    for build in builds:
        rows = score_split(
            model, build, split, crop, placement.device, workers, classes.real, show_progress, colour_on
        )
        name, entry = _dataset_entry(rows, build, split, classes, set(datasets), notes)
        datasets[name] = entry
        scored[name] = rows
    result = _summary(
        checkpoint, builds, split, crop, colour_on, classes, description, notes, datasets, scored
    ) | {"data_differences": differences}
    if out is None:
        atomic.write_json(checkpoint.with_name(f"{checkpoint.stem}.eval-{split}.json"), result)
        return result
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["out"] = str(out)
    write_predictions(out / PREDICTIONS_FILE, scored)
    plot_roc(out / ROC_FILE, scored)
    plot_confusion(out / CONFUSION_FILE, scored)
    atomic.write_json(out / METRICS_FILE, result)  # last: a folder with metrics.json is complete
    return result


def _check_builds(
    builds: list[str],
    split: str,
    spaces: Sequence[str],
    colour_on: str,
    checks: Path | None,
    show_progress: bool,
) -> None:
    """Refuse builds the checkpoint cannot score: first what index.json and tar headers tell (the
    colour spaces, the class names), before any hashing; then, with `checks` (a shard-checks.json),
    the split's shards against index.json."""
    for build in builds:
        shard_set = open_shards(build, split)
        check_spaces(shard_set, spaces, colour_on, build)
        _labels_named(build, build, split)
    if checks is not None:
        for build in builds:
            check_shard_files(build, [split], checks, show_progress)


def _dataset_entry(
    rows: list[dict], build: str, split: str, classes: CheckpointClasses, taken: set[str], notes: list[str]
) -> tuple[str, dict]:
    """A scored build's name (unique among `taken`; set as its rows' `dataset`) and its entry of
    metrics.json: labels, real labels, loss and metrics; a note when unlabelled samples are left
    out, one line when none is labelled."""
    names, real = _map_labels(rows, build)
    name = _dataset_name(rows, build, taken)
    for row in rows:
        row["dataset"] = name
    labelled = [row for row in rows if row["fake"] is not None]
    if len(labelled) < len(rows):
        notes.append(f"{name}: {len(rows) - len(labelled)} unlabelled samples (label -1) left out")
    if note := unnamed_videos_note(labelled, name):
        notes.append(note)
    if not labelled:
        raise BuildError(f"the {split} split in {build} holds no labelled sample: nothing to score")
    return name, {
        "shards": build,
        "labels": {str(label): names[label] for label in sorted(names)},
        "real_labels": sorted(real & set(names)),
        "loss": _loss(rows, names, classes),
    } | dataset_metrics(labelled, build)


def unnamed_videos_note(rows: list[dict], where: str) -> str:
    """A line when samples carry no `video` in their JSON (shards not made by ffx): each is then
    its own video, and the video metrics are frame metrics for those; "" when all name one."""
    unnamed = sum(1 for row in rows if not row["video_named"])
    if not unnamed:
        return ""
    return (
        f"{where}: {unnamed} of {len(rows)} samples name no video (no `video` in their JSON): each "
        "counts as a video of its own, so their video metrics are frame metrics"
    )


def _summary(
    checkpoint: Path,
    builds: list[str],
    split: str,
    crop: int | None,
    colour_on: str,
    classes: CheckpointClasses,
    description: dict,
    notes: list[str],
    datasets: dict[str, dict],
    scored: dict[str, list[dict]],
) -> dict:
    """metrics.json: the evaluation's settings, the checkpoint's classes and training build, the
    metrics of everything scored pooled, and each build's (`datasets`); NaN as None."""
    labelled = [row for rows in scored.values() for row in rows if row["fake"] is not None]
    pooled = level_metrics(labelled, key=lambda row: (row["dataset"], row["video"]))
    losses = [value["loss"] for value in datasets.values()]
    result = {
        "checkpoint": str(checkpoint),
        "shards": builds,
        "split": split,
        "crop": crop,
        "colour_on": colour_on,
        "threshold": THRESHOLD,
        "class_names": classes.names,
        "real_classes": [classes.names[index] for index in classes.real],
        "trained_on": description["data_recipe"],  # the checkpoint's training build's recipe
        "notes": notes,
        # The summary of earlier versions: everything scored, pooled.
        "frame_bosc": pooled["frame"]["bosc"],
        "frame_auc": pooled["frame"]["auc"],
        "video_bosc": pooled["video"]["bosc"],
        "video_auc": pooled["video"]["auc"],
        "frames": pooled["frame"]["frames"],
        "videos": pooled["video"]["videos"],
        "loss": losses[0] if len(losses) == 1 else None,
        "pooled": pooled,
        "datasets": datasets,
    }
    return nan_to_none(result)


# ---------------------------------------------------------------- files


def write_predictions(path: Path, scored: dict[str, list[dict]]) -> None:
    """A row per sample, sorted by dataset, video, frame and track."""
    rows = [row for rows in scored.values() for row in rows]
    rows.sort(
        key=lambda row: (
            row["dataset"],
            row["video"],
            -1 if row["frame_index"] is None else row["frame_index"],
            0 if row["track"] is None else row["track"],
            row["sample"],
        )
    )
    columns = {name: [row[name] for row in rows] for name in PREDICTIONS_SCHEMA.names}
    write_table(path, pa.Table.from_pydict(columns, schema=PREDICTIONS_SCHEMA))


def _text(value: str) -> str:
    """User text for a matplotlib label: a `$` would start mathtext."""
    return str(value).replace("$", r"\$")


def new_figure(panels: int, width: float, height: float):
    """A figure of `panels` axes side by side, without pyplot (no display, no global backend)."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global backend

    figure = Figure(figsize=(width * panels, height), layout="constrained")
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def save_figure(figure, path: Path) -> None:
    """The figure as a PNG, written atomically."""
    with atomic.atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110)


def plot_roc(path: Path, scored: dict[str, list[dict]]) -> None:
    """Frame-level ROC curves of every method (reals against its fakes) and of the whole build,
    one panel per build."""
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axes = new_figure(len(scored), 5.0, 4.6)
    for axis, (name, rows) in zip(axes, scored.items()):
        labelled = [row for row in rows if row["fake"] is not None]
        methods = sorted({row["method"] for row in labelled if row["fake"]})
        curves = [
            (method, [row for row in labelled if not row["fake"] or row["method"] == method])
            for method in methods
        ]
        curves.append(("all", labelled))
        drawn = 0
        for method, subset in curves:
            truth = np.array([row["fake"] for row in subset], bool)
            if truth.all() or not truth.any() or (method == "all" and len(methods) == 1 and drawn):
                continue
            scores = np.array([row["score"] for row in subset])
            false_positive, true_positive, _ = roc_curve(truth, scores)
            style = {"color": "black", "linestyle": "--"} if method == "all" else {}
            label = f"{_text(method)} (AUC {roc_auc_score(truth, scores):.4f})"
            axis.plot(false_positive, true_positive, label=label, linewidth=1.4, **style)
            drawn += 1
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
        axis.set_title(f"{_text(name)}: ROC, frame level")
        if drawn:
            axis.legend(loc="lower right", fontsize=8)
        else:
            axis.text(0.5, 0.5, "one class only: no ROC curve", ha="center", va="center")
    save_figure(figure, path)


def plot_confusion(path: Path, scored: dict[str, list[dict]]) -> None:
    """Frame-level confusion matrix at the 0.5 threshold (rows: truth, columns: prediction),
    one panel per build."""
    from sklearn.metrics import confusion_matrix

    figure, axes = new_figure(len(scored), 4.2, 3.8)
    for axis, (name, rows) in zip(axes, scored.items()):
        labelled = [row for row in rows if row["fake"] is not None]
        truth = [row["fake"] for row in labelled]
        predicted = [row["score"] >= THRESHOLD for row in labelled]
        matrix = confusion_matrix(truth, predicted, labels=[False, True])
        axis.imshow(matrix, cmap="Blues")
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour)
        axis.set_xticks([0, 1], ["real", "fake"])
        axis.set_yticks([0, 1], ["real", "fake"])
        axis.set(xlabel=f"predicted (score ≥ {THRESHOLD})", ylabel="truth")
        axis.set_title(f"{_text(name)}: frames")
    save_figure(figure, path)
