"""Detection metrics, computed with scikit-learn, per frame and per video; class names of shards.

A sample's fake score is 1 - p(real class): the checkpoint's class named pristine or real (class 0
in every ffx recipe). Video-level scores are the mean of a video's frame scores (the public MCX-API
code reports frame-level figures under that name; ffx reports both). The definitions follow
DeepfakeBench: AUC `roc_auc_score`, AP `average_precision_score`, EER the false-positive rate at
the point of `roc_curve` where |FNR - FPR| is smallest; ACC and BOSC (balanced accuracy, the mean
of sensitivity and specificity) read `score >= 0.5` as fake.

Training's validation pools with `detection_metrics`, which gives NaN where a metric is undefined
(a split of one class); `binary_metrics` gives None (null in JSON). Per manipulation method both
`ffx eval` and training's validation use `method_metrics` (a method's fakes against every real).
"""

from __future__ import annotations

import json
import math
import tarfile
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np

from ffx.errors import FfxError

THRESHOLD = 0.5
# Class names read as "real" (compared in lower case): FF++'s originals are `pristine` (method
# `original`), binary recipes name class 0 `real`.
# ---------------------------------------------------------------- metrics


def roc_auc(is_fake: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's, ties counted half); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    is_fake = np.asarray(is_fake, bool)
    if is_fake.all() or not is_fake.any():
        return float("nan")
    return float(roc_auc_score(is_fake, np.asarray(scores, np.float64)))


def bosc(is_fake: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD) -> float:
    """(sensitivity + specificity) / 2 with `score >= threshold` read as fake; NaN without both classes."""
    from sklearn.metrics import balanced_accuracy_score

    is_fake = np.asarray(is_fake, bool)
    if is_fake.all() or not is_fake.any():
        return float("nan")
    return float(balanced_accuracy_score(is_fake, np.asarray(scores) >= threshold))


def detection_metrics(labels: list[int], scores: list[float], videos: list[str]) -> dict[str, float]:
    """Frame- and video-level BOSC and AUC from per-frame labels (class 0 real, any other fake),
    fake scores and video keys (training's validation)."""
    is_fake = np.asarray(labels) != 0
    scores_array = np.asarray(scores, np.float64)
    per_video: dict[str, list[int]] = {}
    for position, video in enumerate(videos):
        per_video.setdefault(video, []).append(position)
    video_fake = np.array([is_fake[positions[0]] for positions in per_video.values()])
    video_scores = np.array([scores_array[positions].mean() for positions in per_video.values()])
    return {
        "frame_bosc": bosc(is_fake, scores_array),
        "frame_auc": roc_auc(is_fake, scores_array),
        "video_bosc": bosc(video_fake, video_scores),
        "video_auc": roc_auc(video_fake, video_scores),
        "frames": len(scores),
        "videos": len(per_video),
    }


def equal_error_rate(is_fake: np.ndarray, scores: np.ndarray) -> float:
    """DeepfakeBench's EER: the false-positive rate at the ROC point (scikit-learn's `roc_curve`)
    where |FNR - FPR| is smallest. Needs both classes."""
    from sklearn.metrics import roc_curve

    false_positive, true_positive, _ = roc_curve(np.asarray(is_fake, bool), np.asarray(scores, np.float64))
    false_negative = 1 - true_positive
    return float(false_positive[np.nanargmin(np.abs(false_negative - false_positive))])


def binary_metrics(is_fake: Sequence[bool], scores: Sequence[float], threshold: float = THRESHOLD) -> dict:
    """BOSC, AUC, ACC, EER and AP of fake scores against the truth, and the counts of each class.
    With one class only ACC is defined: the others are None."""
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    truth = np.asarray(is_fake, bool)
    scores_array = np.asarray(scores, np.float64)
    fake = int(truth.sum())
    real = len(truth) - fake
    both = fake > 0 and real > 0
    predicted = scores_array >= threshold
    return {
        "bosc": bosc(truth, scores_array, threshold) if both else None,
        "auc": float(roc_auc_score(truth, scores_array)) if both else None,
        "acc": float(accuracy_score(truth, predicted)) if len(truth) else None,
        "eer": equal_error_rate(truth, scores_array) if both else None,
        "ap": float(average_precision_score(truth, scores_array)) if both else None,
        "real": real,
        "fake": fake,
    }


def video_scores(
    videos: Sequence[str], labels: Sequence[int], scores: Sequence[float], where: str = ""
) -> tuple[list[str], list[int], np.ndarray]:
    """(video keys, their label, their mean frame score), videos in order of first appearance;
    a video whose frames carry different labels is refused in one line."""
    positions: dict[str, list[int]] = {}
    label_of: dict[str, int] = {}
    for position, (video, label) in enumerate(zip(videos, labels)):
        known = label_of.setdefault(video, label)
        if known != label:
            raise FfxError(
                f"{where + ': ' if where else ''}the frames of video {video!r} disagree on its label "
                f"({known} and {label}): a video has one label; rebuild its shards (`ffx shard BUILD`)"
            )
        positions.setdefault(video, []).append(position)
    scores_array = np.asarray(scores, np.float64)
    means = np.array([scores_array[found].mean() for found in positions.values()], np.float64)
    return list(positions), [label_of[video] for video in positions], means


# ---------------------------------------------------------------- rows of scored samples


def mark_rows(rows: list[dict], real: Collection[int]) -> None:
    """Set each scored row's `fake` (None when unlabelled, label -1) from the labels read as
    `real`, and its `method` where the sample names none (its label name, else real or fake)."""
    for row in rows:
        row["fake"] = None if row["label"] < 0 else row["label"] not in real
        if not row["method"]:
            kind = None if row["fake"] is None else "fake" if row["fake"] else "real"
            row["method"] = row["label_name"] or kind


def level_metrics(rows: list[dict], key=lambda row: row["video"], where: str = "") -> dict:
    """Frame- and video-level metrics (`binary_metrics`) of labelled rows (`fake` set: see
    `mark_rows`); a video's frames must agree on the label."""
    frame = binary_metrics([row["fake"] for row in rows], [row["score"] for row in rows])
    videos, _labels, means = video_scores(
        [key(row) for row in rows], [row["label"] for row in rows], [row["score"] for row in rows], where
    )
    fake_of = {key(row): row["fake"] for row in rows}
    video = binary_metrics([fake_of[video] for video in videos], means)
    return {"frame": frame | {"frames": len(rows)}, "video": video | {"videos": len(videos)}}


def method_metrics(rows: list[dict], where: str = "") -> dict[str, dict]:
    """Per manipulation method (the `method` of the fake rows, sorted), the `level_metrics` of
    all the real rows against that method's fakes: what `ffx eval` and training's validation
    report for each method."""
    methods = sorted({row["method"] for row in rows if row["fake"]})
    return {
        method: level_metrics(
            [row for row in rows if not row["fake"] or row["method"] == method], where=where
        )
        for method in methods
    }


def dataset_metrics(rows: list[dict], where: str) -> dict:
    """A build's metrics pooled and per manipulation method (its reals against the method's fakes)."""
    pooled = level_metrics(rows, where=where)  # refuses a video whose frames disagree, once
    return {"pooled": pooled, "methods": method_metrics(rows)}


# ---------------------------------------------------------------- class names


_NAMES_CACHE: dict[tuple, dict[int, str]] = {}


def split_label_names(shards: str | Path, split: str, wanted: Iterable[int] | None = None) -> dict[int, str]:
    """{label: label_name} from the JSON of the samples of `split` (local shard files only; the
    tar headers are read and the images skipped). Reading stops once every label of `wanted` (by
    default the split's labels in index.json) is named, or after a shard whose samples carry no
    `label_name` at all (shards written without names). Unreadable shards give what was read
    before them: names are a convenience, the reading of the samples themselves reports damage."""
    from ffx.data import open_shards

    try:
        shard_set = open_shards(shards, split)
    except FfxError:
        return {}
    wanted_labels = set(shard_set.labels if wanted is None else wanted) - {-1}
    first = Path(shard_set.urls[0]) if shard_set.urls else None
    stamp = first.stat().st_mtime_ns if first is not None and first.is_file() else 0
    key = (tuple(shard_set.urls), stamp, tuple(sorted(wanted_labels)))
    if key in _NAMES_CACHE:
        return dict(_NAMES_CACHE[key])
    names: dict[int, str] = {}
    for url in shard_set.urls:
        if not Path(url).is_file():
            break  # a pipe: or remote URL: not read here
        found = _names_in_shard(Path(url), names, wanted_labels)
        if not found or (wanted_labels and wanted_labels <= set(names)):
            break
    _NAMES_CACHE[key] = dict(names)
    return names


def _names_in_shard(path: Path, names: dict[int, str], wanted: set[int]) -> bool:
    """Add the label names of one shard's samples to `names`; whether any sample had one."""
    found = False
    try:
        with tarfile.open(path, "r:") as archive:
            while (member := archive.next()) is not None:
                archive.members.clear()  # headers of a large shard would otherwise pile up
                if not (member.isfile() and member.name.endswith(".json")):
                    continue
                handle = archive.extractfile(member)
                meta = json.loads(handle.read()) if handle is not None else {}
                label, name = meta.get("label"), meta.get("label_name")
                if not isinstance(label, int) or not isinstance(name, str):
                    continue
                found = True
                names.setdefault(label, name)
                if wanted and wanted <= set(names):
                    return True
    except (OSError, tarfile.TarError, ValueError, AttributeError):
        pass
    return found


def shard_class_names(shards: str | Path, classes: int) -> list[str]:
    """Names of classes 0..classes-1 of a training build, from its train samples' `label_name`
    (what `ffx index` named them: pristine and the FF++ methods, or real and fake); a class whose
    name cannot be read is `class{index}`."""
    names = split_label_names(shards, "train", range(classes)) if shards else {}
    return [names.get(index, f"class{index}") for index in range(classes)]


def nan_to_none(value):
    """NaN as None, through dicts and lists: strict JSON readers refuse NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(item) for item in value]
    return value
