"""Class-balanced P x K batches from an unbalanced stream."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ffx.errors import FfxError
from ffx.train.batches import BalancedBatches


def stream(counts: dict[int, int], seed: int = 0) -> list[dict]:
    samples = [
        {"label": label, "id": f"{label}-{n}"} for label, count in counts.items() for n in range(count)
    ]
    random.Random(seed).shuffle(samples)
    return samples


@pytest.mark.parametrize(
    ("classes", "per_batch"), [({0: 400, 1: 100}, 2), ({0: 300, 1: 90, 2: 200, 3: 60, 4: 150}, 3)]
)
def test_every_batch_is_p_classes_of_k_images_without_repeats(
    classes: dict[int, int], per_batch: int
) -> None:
    batcher = BalancedBatches(classes_per_batch=per_batch, images_per_class=9, seed=1)
    batches = list(batcher(stream(classes)))
    assert batches
    used = [sample["id"] for batch in batches for sample in batch]
    assert len(used) == len(set(used))  # without replacement within the pass
    for batch in batches:
        counts = Counter(sample["label"] for sample in batch)
        assert len(batch) == per_batch * 9 and len(counts) == per_batch and set(counts.values()) == {9}
    rare = min(classes.values())
    if per_batch == len(classes):  # every batch holds every class: the rare one sets the pace
        assert len(batches) >= rare // 9 - 1
    assert batcher.skipped + len(used) <= sum(classes.values())
    chosen = Counter(frozenset(sample["label"] for sample in batch) for batch in batches)
    assert per_batch == len(classes) or len(chosen) > 1  # P of 5 classes: several combinations


def test_same_seed_same_batches_and_queues_stay_bounded() -> None:
    samples = stream({0: 2000, 1: 50})
    first = [[s["id"] for s in batch] for batch in BalancedBatches(2, 9, seed=3)(samples)]
    second = [[s["id"] for s in batch] for batch in BalancedBatches(2, 9, seed=3)(samples)]
    assert first == second
    batcher = BalancedBatches(2, 9, seed=3, queue_limit=20)
    batches = list(batcher(samples))
    assert len(batches) == 5 and batcher.skipped > 1800  # the common class overflowed its queue
    with pytest.raises(FfxError):
        BalancedBatches(0, 9)
