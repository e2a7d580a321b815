"""BOSC and AUC against scikit-learn, frame and video level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ffx.train.metrics import bosc, detection_metrics, roc_auc


def test_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        scores = np.round(rng.random(200) + labels * 0.3, 1)  # many ties
        assert roc_auc(labels.astype(bool), scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(roc_auc(np.array([True, True]), np.array([0.1, 0.9])))


def test_bosc_is_balanced_accuracy_at_one_half() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300)
    expected = balanced_accuracy_score(labels, (scores >= 0.5).astype(int))
    assert bosc(labels.astype(bool), scores) == expected
    assert bosc(np.array([True, False]), np.array([0.5, 0.49])) == 1.0


def test_video_level_uses_the_mean_frame_score_per_video() -> None:
    labels = [0, 0, 1, 1, 2, 2]  # class 2 is another manipulation: fake too
    scores = [0.2, 0.9, 0.6, 0.7, 0.3, 0.4]
    videos = ["real_a", "real_a", "fake_b", "fake_b", "fake_c", "fake_c"]
    metrics = detection_metrics(labels, scores, videos)
    assert metrics["videos"] == 3 and metrics["frames"] == 6
    assert metrics["video_auc"] == pytest.approx(roc_auc_score([0, 1, 1], [0.55, 0.65, 0.35]), abs=1e-12)
    assert metrics["video_bosc"] == balanced_accuracy_score([0, 1, 1], [1, 1, 0])
    assert metrics["frame_auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1, 1, 1], scores), abs=1e-12)
