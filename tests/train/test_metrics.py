"""BOSC, AUC, ACC, EER and AP: by hand on tiny score sets, and on random ones against independent
computations written for the tests (ffx's metrics call scikit-learn, so comparing them with the
same scikit-learn calls would test nothing): AUC as the Mann-Whitney pair count (tests/assertions.py),
BOSC and ACC as counts, AP as the mean precision at each fake's rank."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffx.errors import FfxError
from ffx.train.metrics import binary_metrics, bosc, detection_metrics, equal_error_rate, roc_auc, video_scores
from tests.assertions import pair_auc


def counted_bosc(labels, predicted) -> float:
    """(sensitivity + specificity) / 2 from counts."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    return float(
        ((predicted & labels).sum() / labels.sum() + (~predicted & ~labels).sum() / (~labels).sum()) / 2
    )


def ranked_ap(labels, scores) -> float:
    """Average precision: the precision at each distinct score that holds a fake, weighted by the
    fakes at it (all samples at a tied score counted together)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    total = 0.0
    for threshold in np.unique(scores[labels]):
        called = scores >= threshold
        total += (labels & (scores == threshold)).sum() * (labels & called).sum() / called.sum()
    return total / labels.sum()


def test_auc_matches_the_pair_count_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        scores = np.round(rng.random(200) + labels * 0.3, 1)  # many ties
        assert roc_auc(labels.astype(bool), scores) == pytest.approx(pair_auc(labels, scores), abs=1e-12)
    assert math.isnan(roc_auc(np.array([True, True]), np.array([0.1, 0.9])))


def test_bosc_is_balanced_accuracy_at_one_half() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300)
    assert bosc(labels.astype(bool), scores) == pytest.approx(counted_bosc(labels, scores >= 0.5), abs=1e-12)
    assert bosc(np.array([True, False]), np.array([0.5, 0.49])) == 1.0


def test_video_level_uses_the_mean_frame_score_per_video() -> None:
    labels = [0, 0, 1, 1, 2, 2]  # class 2 is another manipulation: fake too
    scores = [0.2, 0.9, 0.6, 0.7, 0.3, 0.4]
    videos = ["real_a", "real_a", "fake_b", "fake_b", "fake_c", "fake_c"]
    metrics = detection_metrics(labels, scores, videos)
    assert metrics["videos"] == 3 and metrics["frames"] == 6
    # Video means: real_a 0.55, fake_b 0.65, fake_c 0.35: fake_b beats the real, fake_c does not.
    assert metrics["video_auc"] == pytest.approx(1 / 2, abs=1e-12)
    # At >= 0.5: real_a called fake (specificity 0), fake_b caught, fake_c missed (sensitivity 1/2).
    assert metrics["video_bosc"] == pytest.approx(1 / 4, abs=1e-12)
    # Frames: fakes 0.6 0.7 0.3 0.4 against reals 0.2 0.9: 4 + 0 pairs won of 8.
    assert metrics["frame_auc"] == pytest.approx(4 / 8, abs=1e-12)


def test_binary_metrics_of_hand_made_scores() -> None:
    # Reals 0.1 0.4, fakes 0.35 0.8, ranked by hand: 0.8 (fake), 0.4 (real), 0.35 (fake), 0.1 (real).
    metrics = binary_metrics([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    assert metrics["auc"] == pytest.approx(3 / 4)  # 0.8 beats both reals, 0.35 only 0.1
    # At >= 0.5 only 0.8 is called fake: sensitivity 1/2, specificity 1.
    assert metrics["bosc"] == pytest.approx(3 / 4) and metrics["acc"] == pytest.approx(3 / 4)
    # Precision 1 at recall 1/2 (0.8), 2/3 at recall 1 (0.35): AP = 1/2 * 1 + 1/2 * 2/3.
    assert metrics["ap"] == pytest.approx(5 / 6)
    # A threshold of 0.4 calls one real of two fake and misses one fake of two: FPR = FNR = 1/2.
    assert metrics["eer"] == pytest.approx(1 / 2)
    assert (metrics["real"], metrics["fake"]) == (2, 2)

    # Three reals, one fake: BOSC and ACC differ. Perfectly ranked: AUC 1, AP 1, EER 0.
    metrics = binary_metrics([False, False, False, True], [0.2, 0.6, 0.3, 0.9])
    assert metrics["bosc"] == pytest.approx((1 + 2 / 3) / 2) and metrics["acc"] == pytest.approx(3 / 4)
    assert metrics["auc"] == metrics["ap"] == 1.0 and metrics["eer"] == 0.0
    # Ranked the wrong way round: every threshold that catches the fake passes no real.
    assert equal_error_rate(np.array([False, True]), np.array([0.9, 0.1])) == 1.0
    # A score of exactly 0.5 is fake.
    assert binary_metrics([True, False], [0.5, 0.49])["bosc"] == 1.0


def test_binary_metrics_of_one_class_are_none_but_accuracy() -> None:
    metrics = binary_metrics([True, True, True], [0.2, 0.7, 0.9])
    assert metrics["auc"] is metrics["ap"] is metrics["eer"] is metrics["bosc"] is None
    assert metrics["acc"] == pytest.approx(2 / 3) and (metrics["real"], metrics["fake"]) == (0, 3)


def test_binary_metrics_match_independent_computations() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    metrics = binary_metrics(labels.astype(bool), scores)
    predicted = (scores >= 0.5).astype(int)
    assert metrics["auc"] == pytest.approx(pair_auc(labels, scores), abs=1e-12)
    assert metrics["ap"] == pytest.approx(ranked_ap(labels, scores), abs=1e-12)
    assert metrics["acc"] == pytest.approx((predicted == labels).mean(), abs=1e-12)
    assert metrics["bosc"] == pytest.approx(counted_bosc(labels, predicted), abs=1e-12)
    # EER by brute force over every threshold: the false-positive rate where |FNR - FPR| is smallest.
    # DeepfakeBench's ROC curve (scikit-learn's default) drops points on straight stretches, so its
    # EER may be one real sample away from the exhaustive search's.
    best = min(
        (
            abs((scores[labels == 1] < t).mean() - (scores[labels == 0] >= t).mean()),
            (scores[labels == 0] >= t).mean(),
        )
        for t in np.unique(scores)
    )
    assert metrics["eer"] == pytest.approx(best[1], abs=1.01 / (labels == 0).sum())


def test_video_scores_are_frame_means_and_a_video_has_one_label() -> None:
    videos, labels, means = video_scores(
        ["a", "b", "a", "b", "c"], [0, 1, 0, 1, 2], [0.2, 0.9, 0.4, 0.5, 0.3]
    )
    assert videos == ["a", "b", "c"] and labels == [0, 1, 2]
    assert means == pytest.approx([0.3, 0.7, 0.3])
    with pytest.raises(FfxError, match=r"^BUILD: the frames of video 'a' disagree on its label \(0 and 1\)"):
        video_scores(["a", "a"], [0, 1], [0.1, 0.2], "BUILD")
