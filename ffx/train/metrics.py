"""Detection metrics: BOSC (balanced accuracy at 0.5) and ROC AUC, per frame and per video.

A sample's fake score is 1 - p(class 0): class 0 is pristine in every ffx recipe. Video-level
scores are the mean of a video's frame scores (the public MCX-API code reports frame-level
figures under that name; ffx reports both).
"""

from __future__ import annotations

import numpy as np


def roc_auc(is_fake: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half;
    NaN when only one class is present."""
    is_fake = np.asarray(is_fake, bool)
    scores = np.asarray(scores, np.float64)
    positives, negatives = int(is_fake.sum()), int((~is_fake).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[is_fake].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def bosc(is_fake: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """(sensitivity + specificity) / 2 with `score >= threshold` read as fake; NaN without both classes."""
    is_fake = np.asarray(is_fake, bool)
    predicted = np.asarray(scores) >= threshold
    if is_fake.all() or not is_fake.any():
        return float("nan")
    return float((predicted[is_fake].mean() + (~predicted[~is_fake]).mean()) / 2)


def detection_metrics(labels: list[int], scores: list[float], videos: list[str]) -> dict[str, float]:
    """Frame- and video-level BOSC and AUC from per-frame labels, fake scores and video keys."""
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
