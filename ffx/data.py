"""Reading ffx shards: a WebDataset stream of uint8 tensors with 3·N channels, label and metadata.

Only the colour spaces a run asks for are decoded, crops are cut before the spaces are stacked,
and tensors stay uint8 (a quarter of float32's bytes between processes): normalisation belongs
on the device. Shard lists come from `shards/index.json`, or any WebDataset URL list (globs,
brace lists, `pipe:` commands for object stores).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds

from ffx.errors import BuildError, FfxError
from ffx.pipeline.color import convert, parse_spaces

SHARD_INDEX = "index.json"
COMPUTED_SPACES = ("hsv", "ycbcr")  # per-pixel and cheap: made from the RGB window when read


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split and what shards/index.json says about them."""

    urls: list[str]
    samples: int
    labels: dict[int, int]  # samples per class
    spaces: tuple[str, ...]  # colour spaces stored in the shards


def open_shards(shards: str | Path, split: str) -> ShardSet:
    """The shards of `split` in a shards folder (its index.json), or under a URL pattern."""
    folder = Path(shards)
    index_path = folder / SHARD_INDEX if folder.is_dir() else None
    if index_path is None or not index_path.is_file():
        urls = _expand(str(shards))
        return ShardSet(urls, -1, {}, ())
    index = json.loads(index_path.read_text(encoding="utf-8"))
    entries = [entry for entry in index["shards"] if entry["split"] == split]
    if not entries:
        present = ", ".join(sorted(index["splits"])) or "none"
        raise BuildError(f"no {split!r} shards in {folder} (splits there: {present})")
    totals = index["splits"][split]
    return ShardSet(
        [str(folder / entry["name"]) for entry in entries],
        totals["samples"],
        dict(sorted((int(label), count) for label, count in totals["labels"].items())),
        tuple(index["settings"]["spaces"]),
    )


def _expand(pattern: str) -> list[str]:
    """Local globs are expanded here; brace lists and `pipe:` URLs are left to WebDataset."""
    if pattern.startswith("pipe:") or "{" in pattern:
        return [pattern]
    urls = sorted(glob(pattern))
    if not urls:
        raise BuildError(f"no shards match {pattern} (give a shards folder with index.json, or a glob)")
    return urls


def decode_sample(
    sample: dict, spaces: Sequence[str], crop: int | None = None, rng: random.Random | None = None
) -> dict:
    """A raw WebDataset sample -> {"image": uint8 tensor (3·N, H, W), "label", "meta", "key"}.

    With `crop`, a crop x crop window is cut: at random when `rng` is given (training), else
    from the centre (evaluation); the same window for every colour space. HSV and YCbCr are
    computed from the RGB window (cheaper than decoding their PNGs, and the very same bytes:
    the conversions are per pixel); Lab, expensive to compute, is decoded."""
    decoded: dict[str, np.ndarray] = {}
    window = None

    def plane(space: str) -> np.ndarray:
        nonlocal window
        if space not in decoded:
            if space in COMPUTED_SPACES and "rgb.png" in sample:
                decoded[space] = convert(plane("rgb"), space)
                return decoded[space]
            data = sample.get(f"{space}.png")
            if data is None:
                raise BuildError(
                    f"sample {sample.get('__key__')} has no {space} image (shards hold other spaces)"
                )
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if window is None:
                window = _window(bgr.shape[0], bgr.shape[1], crop, rng)
            top, left, height, width = window
            # The PNG holds the space's channels in order; OpenCV decodes them reversed.
            decoded[space] = cv2.cvtColor(bgr[top : top + height, left : left + width], cv2.COLOR_BGR2RGB)
        return decoded[space]

    # torch interleaves the planes about three times faster than np.concatenate.
    stacked = torch.cat([torch.from_numpy(plane(space)) for space in spaces], dim=2)
    return {
        "image": stacked.permute(2, 0, 1),
        "label": int(sample["cls"]),
        "meta": json.loads(sample["json"]),
        "key": sample["__key__"],
    }


def _window(
    height: int, width: int, crop: int | None, rng: random.Random | None
) -> tuple[int, int, int, int]:
    if crop is None:
        return 0, 0, height, width
    if crop > min(height, width):
        raise FfxError(f"crop {crop} is larger than the {width}x{height} images in the shards")
    if rng is None:
        return (height - crop) // 2, (width - crop) // 2, crop, crop
    return rng.randint(0, height - crop), rng.randint(0, width - crop), crop, crop


class Decoder:
    """A picklable stage that decodes raw samples. Training windows are drawn per sample, seeded
    by (seed, sample key): the same sample gets the same crop whatever the order, worker or
    samples skipped before it."""

    def __init__(self, spaces: tuple[str, ...], crop: int | None, random_crop: bool, seed: int):
        self.spaces, self.crop, self.random_crop, self.seed = spaces, crop, random_crop, seed

    def decode(self, sample: dict) -> dict:
        rng = random.Random(f"{self.seed}/{sample['__key__']}") if self.random_crop else None
        return decode_sample(sample, self.spaces, self.crop, rng)

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            yield self.decode(sample)


def shard_dataset(
    shards: str | Path,
    split: str = "train",
    spaces: str | Sequence[str] = ("rgb",),
    crop: int | None = None,
    train: bool = False,
    shuffle_buffer: int = 250,
    seed: int = 0,
    resampled: bool = False,
    decode: bool = True,
    worker_shift: int = 0,
    split_nodes: bool = True,
) -> wds.DataPipeline:
    """A WebDataset pipeline over one split: shards split across nodes and workers; with `train`,
    shuffled shards, a sample shuffle buffer and random crops, else file order and centre crops.
    `resampled` draws shards with replacement forever (fixed-length epochs for DDP). Every random
    choice is seeded by `seed`, the node and the worker: the same seed gives the same stream.
    With `decode=False` the samples stay raw (bytes per member), for stages that pick samples
    before paying for their decoding; `Decoder` decodes them later. `worker_shift` rotates the
    roles of the DataLoader workers (see `worker_role`). `split_nodes=False` gives this process
    every shard even under torchrun (one rank evaluating a whole split)."""
    shard_set = open_shards(shards, split)
    spaces = parse_spaces(spaces)
    missing = [space for space in spaces if shard_set.spaces and space not in shard_set.spaces]
    if missing:
        raise BuildError(
            f"colour spaces {','.join(missing)} are not in the shards ({','.join(shard_set.spaces)})"
        )
    if resampled:
        role_seed = _RoleSeed(worker_shift)
        stages = [wds.ResampledShards(shard_set.urls, seed=seed, worker_seed=role_seed, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(shard_set.urls)]
        if train:
            stages.append(wds.shuffle(100, rng=random.Random(seed)))
        if split_nodes:
            stages.append(wds.split_by_node)
    stages += [SplitByWorker(worker_shift), wds.tarfile_to_samples()]
    if train:
        stages.append(wds.shuffle(shuffle_buffer, rng=random.Random(seed + 1)))
    if decode:
        stages.append(Decoder(spaces, crop, train, seed))
    return wds.DataPipeline(*stages)


def worker_role(shift: int = 0) -> tuple[int, int]:
    """(role, workers) of this DataLoader worker: its id rotated by `shift`. A DataLoader takes
    batches from its workers in turn from worker 0; a resumed stream that must start with the
    batch of worker `shift % workers` gives worker 0 that worker's role, and so on."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return (info.id + shift) % info.num_workers, info.num_workers


@dataclass(frozen=True)
class SplitByWorker:
    """Every worker keeps the shards of its role (WebDataset's split_by_worker, with roles)."""

    shift: int = 0

    def __call__(self, source):
        role, workers = worker_role(self.shift)
        yield from itertools.islice(source, role, None, workers)


@dataclass(frozen=True)
class _RoleSeed:
    """Seed of a worker's resampled shard draws: its node and its role."""

    shift: int = 0

    def __call__(self) -> int:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return rank * 1000 + worker_role(self.shift)[0]


def collate(samples: list[dict]) -> dict:
    """Stack decoded samples into a batch: uint8 images, int64 labels, keys and metadata lists.

    Each image is a (C, H, W) view of channel-interleaved memory, so stacking the underlying
    (H, W, C) arrays is a plain copy; the batch is (B, C, H, W) in channels-last memory."""
    return {
        "image": torch.stack([sample["image"].permute(1, 2, 0) for sample in samples]).permute(0, 3, 1, 2),
        "label": torch.tensor([sample["label"] for sample in samples], dtype=torch.int64),
        "key": [sample["key"] for sample in samples],
        "meta": [sample["meta"] for sample in samples],
    }


def shard_loader(dataset: wds.DataPipeline, batch_size: int, workers: int = 2, pin_memory: bool = False):
    """Batches of `dataset` from `workers` processes (uint8 tensors; pin memory for a GPU)."""
    batched = dataset.compose(wds.batched(batch_size, collation_fn=collate, partial=True))
    return wds.WebLoader(batched, batch_size=None, num_workers=workers, pin_memory=pin_memory)
