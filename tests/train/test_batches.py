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
    # Every sample is used, skipped by a full queue, or still queued at the end; and the stream
    # ended with fewer than P classes able to give K samples (else one more batch was due).
    per_class = Counter(sample["label"] for batch in batches for sample in batch)
    assert len(used) + batcher.skipped + sum(batcher.left.values()) == sum(classes.values())
    assert all(per_class[label] + batcher.left[label] <= count for label, count in classes.items())
    assert sum(1 for waiting in batcher.left.values() if waiting >= 9) < per_batch
    chosen = Counter(frozenset(sample["label"] for sample in batch) for batch in batches)
    assert per_batch == len(classes) or len(chosen) > 1  # P of 5 classes: several combinations


def test_same_seed_same_batches_and_queues_stay_bounded() -> None:
    samples = stream({0: 2000, 1: 50})
    first = [[s["id"] for s in batch] for batch in BalancedBatches(2, 9, seed=3)(samples)]
    second = [[s["id"] for s in batch] for batch in BalancedBatches(2, 9, seed=3)(samples)]
    assert first == second
    batcher = BalancedBatches(2, 9, seed=3, queue_limit=20)
    batches = list(batcher(samples))
    # Two classes, two per batch: every batch takes 9 of the 50 rare samples, which never wait
    # long enough to overflow; the common class keeps at most 20 queued and skips the rest.
    assert len(batches) == 50 // 9 and batcher.left[1] == 50 - 5 * 9
    assert 9 <= batcher.left[0] <= 20  # still full enough for a batch: the rare class ran out
    assert batcher.skipped == 2000 - 5 * 9 - batcher.left[0]
    with pytest.raises(FfxError):
        BalancedBatches(0, 9)


def test_carried_samples_queue_first_and_a_quota_drains_the_rest() -> None:
    """A pass with a quota makes that many batches, then only queues (bounded); its leftovers,
    carried into the next pass, are queued before that pass's own samples and used first."""
    first_pass = stream({0: 30, 1: 30}, seed=1)
    batcher = BalancedBatches(2, 3, seed=2, queue_limit=15)
    batches = list(batcher(first_pass, quota=4))
    assert len(batches) == 4
    used = {sample["id"] for batch in batches for sample in batch}
    left = [sample for queue in batcher.leftovers.values() for sample in queue]
    # 12 of each class used, then 15 queued (the bound) and 3 skipped: every sample read.
    assert batcher.left == {0: 15, 1: 15} and batcher.skipped == 6
    assert not used & {sample["id"] for sample in left}
    fresh = [sample | {"id": f"next-{sample['id']}"} for sample in stream({0: 30, 1: 30}, seed=3)]
    second = list(BalancedBatches(2, 3, seed=2, queue_limit=15)(fresh, left))
    # The carried queues are full enough for batches at once: the first ones are all carried.
    carried_ids = [sample["id"] for sample in left]
    for batch in second[:5]:
        assert all(sample["id"] in carried_ids for sample in batch)
    for label in (0, 1):  # in queue order
        order = [s["id"] for batch in second for s in batch if s["label"] == label][:15]
        assert order == [s["id"] for s in batcher.leftovers[label]]
