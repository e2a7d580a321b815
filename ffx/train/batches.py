"""Class-balanced P x K batches from a sample stream (the paper's 3 classes x 9 images).

Samples queue per class as they stream by; whenever P classes hold K samples each, P of them
(seeded choice) give K samples apiece to the next batch. Every sample is used at most once per
pass over the stream. A class queue holds at most `queue_limit` samples: a common class that
streams in faster than the rare ones can be used skips the overflow (counted), so memory stays
bounded and each batch stays balanced: per pass, common classes are under-sampled. Every sample
of a finite stream is used, skipped or left in its queue at the end (`left`, per class).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ffx.data import record_error
from ffx.errors import FfxError


@dataclass
class BalancedBatches:
    """A picklable stream stage: samples (decoded, or raw with a `cls` member) in, lists of P x K out."""

    classes_per_batch: int = 3
    images_per_class: int = 9
    seed: int = 0
    queue_limit: int | None = None  # default: 4 batches' worth of one class

    def __post_init__(self) -> None:
        if self.classes_per_batch < 1 or self.images_per_class < 1:
            raise FfxError("--classes-per-batch and --images-per-class must be at least 1")
        self.skipped = 0  # samples of the last pass dropped by a full queue
        self.left: dict[int, int] = {}  # per class, samples still queued when that pass ended

    def __call__(self, samples: Iterable[dict]) -> Iterator[list[dict]]:
        rng = random.Random(self.seed)
        self.skipped, self.left = 0, {}
        limit = self.queue_limit or 4 * self.images_per_class * max(self.classes_per_batch, 2)
        queues: dict[int, deque] = {}
        for sample in samples:
            queue = queues.setdefault(_label(sample), deque())
            if len(queue) >= limit:
                self.skipped += 1
                continue
            queue.append(sample)
            ready = sorted(
                label for label, waiting in queues.items() if len(waiting) >= self.images_per_class
            )
            if len(ready) >= self.classes_per_batch:
                batch = []
                for label in rng.sample(ready, self.classes_per_batch):
                    batch += [queues[label].popleft() for _ in range(self.images_per_class)]
                yield batch
        self.left = {label: len(waiting) for label, waiting in sorted(queues.items())}


def _label(sample: dict) -> int:
    """The class of a decoded sample, or of a raw one (its `cls` member)."""
    if "label" in sample:
        return sample["label"]
    try:
        return int(sample["cls"])
    except (KeyError, ValueError):
        raise record_error(sample, "no readable class (.cls member)") from None
