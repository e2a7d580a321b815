"""The training data stream: the shards checked, and each epoch's batches for this rank.

Batches stream from the shards, P classes x K images each, decoded as uint8 (randomly cropped
and mirrored); the step normalises them on the device. In one process an epoch reads every
shard once, in an order seeded per epoch, and the class queues' leftovers are carried into the
next epoch; under torchrun shards are resampled, so every rank runs the same fixed number of
steps whatever its share of shards. Each epoch's stream is seeded by (seed, epoch, rank), which
makes a resumed run replay exactly: it rebuilds the epoch's stream (with the leftovers it
started with, kept in the run state) and skips the batches already trained on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import webdataset as wds

from ffx.data import (
    SHARD_CHECKS,
    Decoder,
    check_shard_files,
    check_spaces,
    collate,
    loader_spaces,
    open_shards,
    pass_order,
    raise_sent_errors,
    send_errors,
    shard_dataset,
    worker_role,
)
from ffx.errors import BuildError, FfxError
from ffx.model.checkpoint import Placement
from ffx.train.batches import BalancedBatches, Carry, PassBatches, Short, interleave, split_quota
from ffx.train.config import TrainConfig

Carried = tuple[tuple[tuple[int, str], ...], ...]  # per loader worker role: (shard index, key)


def check_shards(config: TrainConfig) -> tuple[int, int]:
    """(number of classes, samples of the rarest class) of the training split, with clear errors."""
    shard_set = open_shards(config.shards, "train")
    if shard_set.samples == 0:
        raise BuildError(f"the train split in {config.shards} is empty")
    check_spaces(shard_set, config.spaces, config.colour_on, config.shards)
    if not shard_set.labels:  # a URL pattern: the counts index.json would give must be told
        if config.classes is None or config.steps_per_epoch is None:
            raise BuildError(
                f"{config.shards} comes without index.json: give --classes and --steps-per-epoch, "
                "or a shards folder"
            )
        if config.classes < 2:
            raise FfxError(f"--classes {config.classes}: a detector needs at least 2 (real and fake)")
        if config.classes_per_batch > config.classes:
            raise FfxError(f"--classes-per-batch {config.classes_per_batch} but --classes {config.classes}")
        return config.classes, 0
    if min(shard_set.labels) < 0:
        raise BuildError("the train split holds unlabelled samples (label -1): index with labels")
    classes = max(shard_set.labels) + 1
    if classes < 2:
        raise BuildError(
            f"the train split in {config.shards} holds one class (label 0 only): "
            "a detector needs at least 2 (real and fake)"
        )
    absent = [label for label in range(classes) if label not in shard_set.labels]
    if absent:
        raise BuildError(
            f"class {absent[0]} is missing from the train split (classes must be 0..{classes - 1})"
        )
    if config.classes_per_batch > classes:
        raise FfxError(f"--classes-per-batch {config.classes_per_batch} but the data has {classes} classes")
    return classes, min(shard_set.labels.values())


def check_run_shards(config: TrainConfig, run: Path, placement: Placement, show_progress: bool) -> None:
    """Check the train and validation shards against index.json, remembering matches in
    `run`/shard-checks.json. One process per node checks (a node may read its own copy of the
    shards); the others wait for it."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        splits = ["train", config.val_split]
        check_shard_files(config.shards, splits, run / SHARD_CHECKS, show_progress and placement.main)
    if placement.world > 1:
        # The first check of a large build can outlast NCCL's 10-minute collective timeout:
        # the others wait on a CPU group with a longer one.
        waiting = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
        dist.barrier(group=waiting)
        dist.destroy_process_group(waiting)


def epoch_batches(
    config: TrainConfig, epoch: int, placement: Placement, skip: int = 0, carried: Carried = ()
) -> Iterable:
    """This rank's batches for one epoch, seeded by (seed, epoch, rank).

    In one process (world size 1) the epoch is one pass: every shard once, in a seeded order of
    its own, its `steps_per_epoch * accumulate` batches shared among the loader workers by their
    shards' samples; the leftovers `carried` from the previous epoch (per worker role, from its
    `Carry`) are queued first. A worker whose shards run out gives `Short` in place of its missing
    batches, and each ends with a `Carry` of its leftovers. Under torchrun: an endless resampled
    stream (no `Short`, no `Carry`). Samples are chosen for batches before they are decoded, so
    neither the samples a batch does not need nor the `skip` batches a resumed run has already
    trained on cost any decoding."""
    seed = config.seed * 1_000_003 + epoch * 1009 + placement.rank
    one_pass = placement.world == 1
    workers = config.workers or 0
    if one_pass:
        shard_set = open_shards(config.shards, "train")
        workers = min(workers, len(shard_set.urls))  # a worker without a shard would only idle
        roles = max(workers, 1)
        order = pass_order(len(shard_set.urls), seed)
        sizes = shard_set.shard_samples or (1,) * len(shard_set.urls)
        quotas = split_quota(
            config.steps_per_epoch * config.accumulate,
            [sum(sizes[index] for index in order[role::roles]) for role in range(roles)],
        )
        own, shift = interleave(quotas, skip)
        batcher = PassBatches(
            config.classes_per_batch,
            config.images_per_class,
            seed,
            tuple(shard_set.urls),
            quotas,
            carried,
            shift,
        )
    else:
        own, shift = interleave((None,) * max(workers, 1), skip)
        batcher = BalancedBatches(config.classes_per_batch, config.images_per_class, seed=seed)
    samples = shard_dataset(
        config.shards,
        "train",
        config.spaces,
        config.crop,
        train=True,
        seed=seed,
        resampled=not one_pass,
        decode=False,
        worker_shift=shift,
        colour_on=config.colour_on,
    )
    decoder = Decoder(
        loader_spaces(config.spaces, config.colour_on), config.crop, True, seed, flip=config.flip
    )
    batches = samples.compose(
        batcher, SkipFirst(own, shift), wds.map(partial(decode_batch, decoder)), send_errors
    )
    loader = wds.WebLoader(
        batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=placement.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),  # leaves the global RNG (dropout) alone
    )
    return loader.compose(raise_sent_errors)  # an unreadable record: its one-line error, as itself


def decode_batch(decoder: Decoder, batch: list | Short | Carry) -> dict | Short | Carry:
    """A batch of raw samples decoded and collated; `Short` and `Carry` pass as they are."""
    if not isinstance(batch, list):
        return batch
    return collate([decoder.decode(sample) for sample in batch])


@dataclass(frozen=True)
class SkipFirst:
    """Drop the batches of the loader's output a resumed run has trained on: `own[role]` for each
    worker role (see `ffx.train.batches.interleave`). The stream's worker roles are rotated by
    `shift` (see `ffx.data.worker_role`), so the loader, which starts with worker 0, starts with
    the worker whose role gives the next batch."""

    own: tuple[int, ...]
    shift: int = 0

    def __call__(self, batches: Iterable) -> Iterator:
        """`batches` less the first `own[role]` of this worker's."""
        role, _ = worker_role(self.shift)
        for number, batch in enumerate(batches):
            if number >= self.own[role]:
                yield batch


def collect_carries(items: Iterable, carried: dict[int, tuple]) -> Iterator:
    """The loader's batches and `Short`s; each `Carry` (a worker's leftovers) goes to `carried`."""
    for item in items:
        if isinstance(item, Carry):
            carried[item.role] = item.samples
        else:
            yield item
