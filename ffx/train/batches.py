"""Class-balanced P x K batches from a sample stream (the paper's 3 classes x 9 images).

Samples queue per class as they stream by; whenever P classes hold K samples each, P of them
(seeded choice) give K samples apiece to the next batch. Every sample is used at most once per
pass over the stream. A class queue holds at most `queue_limit` samples: a common class that
streams in faster than the rare ones can be used skips the overflow (counted), so memory stays
bounded and each batch stays balanced: per pass, common classes are under-sampled. Every sample
of a finite stream is used, skipped or left in its queue at the end (`left`, per class;
`leftovers`, the samples themselves), and a pass may start with the previous one's leftovers
queued (`carried`): nothing is dropped at an epoch's end.

`PassBatches` is the epoch of a single-process run: every shard read once, the previous epoch's
leftovers first, a fixed number of batches per loader worker (`Short` where a worker's share of
the shards runs out, a `Carry` of its leftovers at the end).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ffx.data import fetch_samples, record_error, worker_role
from ffx.errors import FfxError

CarriedSample = tuple[int, str]  # (index of its shard in the split's shard list, sample key)


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
        self.leftovers: dict[int, list[dict]] = {}  # those samples, in queue order

    def __call__(
        self, samples: Iterable[dict], carried: Sequence[dict] = (), quota: int | None = None
    ) -> Iterator[list[dict]]:
        """Batches of `samples`, after `carried` (a previous pass's leftovers) are queued. With
        `quota`, at most that many batches: the rest of the stream only fills the queues (a
        drained pass), whose samples are then the leftovers for the next."""
        rng = random.Random(self.seed)
        self.skipped, self.left, self.leftovers = 0, {}, {}
        limit = self.queue_limit or 4 * self.images_per_class * max(self.classes_per_batch, 2)
        queues: dict[int, deque] = {}
        made = 0

        def ready_batches() -> Iterator[list[dict]]:
            nonlocal made
            while quota is None or made < quota:
                ready = sorted(
                    label for label, waiting in queues.items() if len(waiting) >= self.images_per_class
                )
                if len(ready) < self.classes_per_batch:
                    return
                batch = []
                for label in rng.sample(ready, self.classes_per_batch):
                    batch += [queues[label].popleft() for _ in range(self.images_per_class)]
                made += 1
                yield batch

        for sample in carried:
            queues.setdefault(_label(sample), deque()).append(sample)
        yield from ready_batches()
        for sample in samples:
            queue = queues.setdefault(_label(sample), deque())
            if len(queue) >= limit:
                self.skipped += 1
                continue
            queue.append(sample)
            if len(queue) >= self.images_per_class:
                yield from ready_batches()
        self.left = {label: len(waiting) for label, waiting in sorted(queues.items())}
        self.leftovers = {label: list(waiting) for label, waiting in sorted(queues.items())}


def _label(sample: dict) -> int:
    """The class of a decoded sample, or of a raw one (its `cls` member)."""
    if "label" in sample:
        return sample["label"]
    try:
        return int(sample["cls"])
    except (KeyError, ValueError):
        raise record_error(sample, "no readable class (.cls member)") from None


# ---------------------------------------------------------------- an epoch in one process


@dataclass(frozen=True)
class Short:
    """A batch a loader worker could not make: its share of the epoch's shards ran out first.
    The training step it stands for is skipped (no update), so the schedule stays in step."""


@dataclass(frozen=True)
class Carry:
    """The last item of a worker's epoch: the samples left in its class queues (identities), to
    be queued first by the same worker role next epoch."""

    role: int
    samples: tuple[CarriedSample, ...]


def split_quota(batches: int, weights: Sequence[float]) -> tuple[int, ...]:
    """`batches` shared in proportion to `weights` (largest remainders; ties to the lower index)."""
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(weights), float(len(weights))
    exact = [batches * weight / total for weight in weights]
    quotas = [int(share) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda index: (quotas[index] - exact[index], index))
    for index in by_remainder[: batches - sum(quotas)]:
        quotas[index] += 1
    return tuple(quotas)


def interleave(quotas: Sequence[int | None], done: int) -> tuple[tuple[int, ...], int]:
    """How the first `done` batches of a loader came from its workers: (batches of each worker
    role, the role that gives the next one). A DataLoader takes batches from its workers in
    turn, passing over those that have given all theirs (`quotas`, None for endless)."""
    roles = len(quotas)
    own, role = [0] * roles, 0
    if all(quota is None for quota in quotas):  # endless streams: plain turns
        return tuple(len(range(index, done, roles)) for index in range(roles)), done % roles
    if any(quota is None for quota in quotas) or done > sum(quotas):
        raise ValueError(f"{done} batches cannot come from workers of quotas {list(quotas)}")
    for _ in range(done):
        while quotas[role] is not None and own[role] >= quotas[role]:
            role = (role + 1) % roles
        own[role] += 1
        role = (role + 1) % roles
    return tuple(own), role


@dataclass(frozen=True)
class PassBatches:
    """A stream stage for one epoch of a single-process run, after the shards of this worker role
    (`worker_role(shift)`) are read: the role's carried leftovers are fetched from their shards
    and queued first, then its `quotas[role]` batches are made (`Short` for each one its shards
    cannot give), the rest of its shards only fill the queues, and a `Carry` of what is left in
    them ends the stream."""

    classes_per_batch: int
    images_per_class: int
    seed: int
    urls: tuple[str, ...]  # every shard of the split: a carried sample names its shard by index
    quotas: tuple[int, ...]  # batches per worker role
    carried: tuple[tuple[CarriedSample, ...], ...] = ()  # per worker role
    shift: int = 0

    def __call__(self, samples: Iterable[dict]) -> Iterator:
        role, _ = worker_role(self.shift)
        quota = self.quotas[role]
        batcher = BalancedBatches(self.classes_per_batch, self.images_per_class, self.seed)
        made = 0
        for batch in batcher(samples, self._fetch(role), quota):
            made += 1
            yield batch
        for _ in range(made, quota):
            yield Short()
        index = {url: number for number, url in enumerate(self.urls)}
        left = tuple(
            (index[sample["__url__"]], sample["__key__"])
            for queue in batcher.leftovers.values()
            for sample in queue
        )
        yield Carry(role, left)

    def _fetch(self, role: int) -> list[dict]:
        """The raw samples this role carried into the epoch, in queue order."""
        wanted = self.carried[role] if role < len(self.carried) else ()
        by_shard: dict[int, list[str]] = {}
        for shard, key in wanted:
            by_shard.setdefault(shard, []).append(key)
        found = {
            (shard, key): sample
            for shard, keys in by_shard.items()
            for key, sample in fetch_samples(self.urls[shard], keys).items()
        }
        return [found[(shard, key)] for shard, key in wanted]
