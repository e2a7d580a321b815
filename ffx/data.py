"""Reading ffx shards: a WebDataset stream of uint8 tensors with 3·N channels, label and metadata.

Only the colour spaces a run asks for are decoded, crops are cut before the spaces are stacked,
and tensors stay uint8 (a quarter of float32's bytes between processes): normalisation belongs
on the device. With the colour on the device (`colour_on="device"`), only the RGB PNG is decoded
and the training step makes the other spaces from the uint8 RGB batch (`ffx.model.colour`, equal
to `color.convert` on every RGB value); on the host, they are made or decoded here. Shards that
store only rgb.png (the recipe's `[shard] stored_spaces = "rgb"`) give the other spaces either way.
Shard lists come from `shards/index.json`, or any WebDataset URL list (globs, brace lists, `pipe:`
commands for object stores). A record that cannot be read or decoded stops
the stream with a `RecordError` naming its shard and sample, also from loader worker processes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds

from ffx.errors import BuildError, FfxError
from ffx.pipeline.engine.builddir import SHARD_INDEX
from ffx.pipeline.media.color import convert, parse_spaces
from ffx.train.config import COLOUR_ON

SHARD_CHECKS = "shard-checks.json"  # in a run folder: the shards whose sha256 matched index.json
CHECKS_FLUSH_SECONDS = 2.0  # how often the checks made so far are written while hashing
CheckKey = tuple[str, int, int, str]  # a checked shard: resolved path, bytes, mtime_ns, sha256
COMPUTED_SPACES = ("hsv", "ycbcr")  # per-pixel and cheap: made from the RGB window when read


class RecordError(BuildError):
    """A shard record that cannot be read or decoded; the message names the shard and the sample."""


def record_error(sample: dict, problem: str) -> RecordError:
    """The one-line error for an unreadable `sample` (a raw WebDataset sample: `__url__`, `__key__`)."""
    url = str(sample.get("__url__", "?"))
    folder, build = Path(url).parent, "BUILD"
    with contextlib.suppress(OSError):  # a URL that is no path (pipe:, https:) names no build
        build = str(folder.parent) if (folder / SHARD_INDEX).is_file() else build
    return RecordError(
        f"{url}: sample {sample.get('__key__', '?')}: {problem} "
        f"(a damaged shard: check it with `ffx verify {build}`, rebuild it with `ffx shard {build}`)"
    )


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split and what shards/index.json says about them."""

    urls: list[str]
    samples: int
    labels: dict[int, int]  # samples per class
    spaces: tuple[str, ...]  # colour spaces of the build (what a run may ask for)
    shard_samples: tuple[int, ...] = ()  # samples per shard, in `urls` order (empty: unknown)
    stored: tuple[str, ...] = ()  # spaces with a PNG in each sample (rgb alone: the rest is derived)


def open_shards(shards: str | Path, split: str) -> ShardSet:
    """The shards of `split` in a shards folder (its index.json), or under a URL pattern."""
    folder = Path(shards)
    index_path = folder / SHARD_INDEX if folder.is_dir() else None
    if index_path is None:
        urls = _expand(str(shards))
        return ShardSet(urls, -1, {}, ())
    if not index_path.is_file():  # a folder is no shard: a build, or a folder of tars
        inside = folder / "shards" / SHARD_INDEX
        hint = (
            f"give --shards {folder / 'shards'}"
            if inside.is_file()
            else (
                "give BUILD/shards (written by `ffx shard`), or a URL pattern of tar files "
                f"({folder}/train-{{000000..000009}}.tar)"
            )
        )
        raise BuildError(f"{folder} is a folder without {SHARD_INDEX}: {hint}")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError:
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        if (folder / "shards").is_dir():  # BUILD given: its index.json is the build's
            raise BuildError(f"{index_path} is not a shards index; give --shards {folder / 'shards'}")
        raise BuildError(
            f"{index_path} is not a readable shards index (damaged or not ffx's); write it again with "
            f"`ffx shard {folder.parent}`"
        )
    entries = [entry for entry in index["shards"] if entry["split"] == split]
    if not entries:
        present = ", ".join(sorted(index["splits"])) or "none"
        raise BuildError(f"no {split!r} shards in {folder} (splits there: {present})")
    totals = index["splits"][split]
    settings = index["settings"]
    return ShardSet(
        [str(folder / entry["name"]) for entry in entries],
        totals["samples"],
        dict(sorted((int(label), count) for label, count in totals["labels"].items())),
        tuple(settings["spaces"]),
        tuple(int(entry["samples"]) for entry in entries),
        # Indexes written before `stored` existed store every space of the build.
        tuple(settings.get("stored", settings["spaces"])),
    )


def resolve_colour_on(colour_on: str, device: torch.device | str) -> str:
    """`auto` -> `device` on a GPU, `host` on a CPU (where the loader's worker processes convert
    faster than the training process would); `device` and `host` as they are."""
    if colour_on not in COLOUR_ON:
        raise FfxError(f"--colour-on must be {', '.join(COLOUR_ON)}, got {colour_on!r}")
    if colour_on != "auto":
        return colour_on
    return "device" if torch.device(device).type == "cuda" else "host"


def loader_spaces(spaces: Sequence[str], colour_on: str) -> tuple[str, ...]:
    """The spaces the loader decodes: all of `spaces` on the host, RGB alone for the device."""
    return ("rgb",) if colour_on == "device" else tuple(spaces)


def check_spaces(shard_set: ShardSet, spaces: Sequence[str], colour_on: str, where: str) -> None:
    """A BuildError when the shards in `where` cannot give `spaces`: a space the build does not
    have, or RGB missing from the samples for the colour on the device (a URL pattern, whose
    spaces are unknown, is not checked)."""
    missing = [space for space in spaces if shard_set.spaces and space not in shard_set.spaces]
    if missing:
        raise BuildError(
            f"{where}: colour spaces {','.join(missing)} are not in the shards ({','.join(shard_set.spaces)})"
        )
    if colour_on == "device" and shard_set.stored and "rgb" not in shard_set.stored:
        raise BuildError(
            f"{where}: the colour on the device needs rgb.png in the samples, which hold "
            f"{','.join(shard_set.stored)}: use --colour-on host"
        )


def _expand(pattern: str) -> list[str]:
    """Local globs are expanded here, brace lists (`train-{000..009}.tar`, also inside a `pipe:`
    command) by WebDataset's rules: a list of one URL per shard. Other `pipe:` URLs are one shard."""
    if "{" in pattern or "::" in pattern:
        return list(wds.shardlists.expand_urls(pattern))
    if pattern.startswith("pipe:"):
        return [pattern]
    urls = sorted(glob(pattern))
    if not urls:
        raise BuildError(f"no shards match {pattern} (give a shards folder with index.json, or a glob)")
    return urls


def check_shard_files(
    shards: str | Path, splits: Sequence[str], cache: Path, show_progress: bool = False
) -> int:
    """Check the shards of `splits` against index.json (size, then sha256) before anything reads
    them; a BuildError names the first shard that is missing or differs. Matches are remembered in
    `cache` (a JSON file in a run folder, never in the shards folder, which may be shared and
    read-only), keyed by the shard's resolved path, size, mtime_ns and expected sha256: a rerun
    hashes only shards that changed or moved. Shards given as a URL pattern come without an
    index.json and have nothing to be checked against: they are not checked. Returns how many
    shards were hashed."""
    from ffx.pipeline.engine import atomic  # the one file-hashing helper of the pipeline
    from ffx.pipeline.engine.progress import stage_progress

    folder = Path(shards)
    index_path = folder / SHARD_INDEX
    if not index_path.is_file():
        return 0
    index = json.loads(index_path.read_text(encoding="utf-8"))
    build = folder.resolve().parent
    checked = _read_checks(cache)
    pending = []
    # Every shard is looked at (stat only) before any is hashed: a missing or truncated shard
    # is reported at once, not after hours of hashing the others.
    for entry in index["shards"]:
        if entry["split"] not in splits:
            continue
        path = (folder / entry["name"]).resolve()
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise _bad_shard(path, "listed in index.json but missing", build) from None
        if stat.st_size != entry["bytes"]:
            raise _bad_shard(path, f"{stat.st_size} bytes, index.json says {entry['bytes']}", build)
        key = (str(path), stat.st_size, stat.st_mtime_ns, entry["sha256"])
        if key not in checked:
            pending.append(key)
    # The checks so far are written every few seconds and at the end (also when a shard differs),
    # so a stopped check keeps what it did; writing after each shard would write the whole list
    # each time, quadratic in the number of shards (4 500 shards: 3 minutes of JSON).
    written, unsaved = time.monotonic(), False
    with stage_progress("check shards", len(pending), "shards", "MB", show_progress) as progress:
        try:
            for key in pending:
                sha256 = atomic.file_sha256(Path(key[0]))
                if sha256 != key[3]:
                    raise _bad_shard(
                        Path(key[0]), f"sha256 {sha256[:12]}…, index.json says {key[3][:12]}…", build
                    )
                checked.add(key)
                unsaved = True
                if time.monotonic() - written >= CHECKS_FLUSH_SECONDS:
                    _write_checks(cache, checked)
                    written, unsaved = time.monotonic(), False
                progress.advance(1, key[1] >> 20)
        finally:
            if unsaved:
                _write_checks(cache, checked)
    return len(pending)


def _bad_shard(path: Path, problem: str, build: Path) -> BuildError:
    return BuildError(f"{path}: {problem}; run `ffx verify {build}` / rebuild with `ffx shard {build}`")


def _read_checks(cache: Path) -> set[CheckKey]:
    """The checks remembered in `cache`; an unreadable cache is an empty one (it only saves time)."""
    try:
        entries = json.loads(Path(cache).read_text(encoding="utf-8"))["checked"]
        return {(item["path"], item["bytes"], item["mtime_ns"], item["sha256"]) for item in entries}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _write_checks(cache: Path, checked: set[CheckKey]) -> None:
    from ffx.pipeline.engine import atomic

    fields = ("path", "bytes", "mtime_ns", "sha256")
    try:
        atomic.write_json(Path(cache), {"checked": [dict(zip(fields, key)) for key in sorted(checked)]})
    except OSError as error:
        raise FfxError(f"cannot write {cache}: {error.strerror or error}") from None


def decode_sample(
    sample: dict,
    spaces: Sequence[str],
    crop: int | None = None,
    rng: random.Random | None = None,
    flip: bool = False,
) -> dict:
    """A raw WebDataset sample -> {"image": uint8 tensor (3·N, H, W), "label", "meta", "key"}.

    With `crop`, a crop x crop window is cut: at random when `rng` is given (training), else
    from the centre (evaluation); the same window for every colour space. With `flip`, the
    stacked image is mirrored left to right: every colour space alike. HSV and YCbCr are
    computed from the RGB window (cheaper than decoding their PNGs, and the very same bytes:
    the conversions are per pixel); Lab, expensive to compute, is decoded, and computed from
    the RGB window (`color.convert`, the bytes its PNG would hold) when the sample stores RGB
    alone."""
    decoded: dict[str, np.ndarray] = {}
    window = None

    def plane(space: str) -> np.ndarray:
        nonlocal window
        if space not in decoded:
            stored = f"{space}.png" in sample
            if space != "rgb" and "rgb.png" in sample and (space in COMPUTED_SPACES or not stored):
                decoded[space] = convert(plane("rgb"), space)
                return decoded[space]
            data = sample.get(f"{space}.png")
            if data is None:
                raise record_error(sample, f"no {space} image (shards hold other spaces)")
            bgr = _decode_png(data)
            if bgr is None:
                raise record_error(sample, f"{space}.png is not a readable PNG")
            if window is None:
                window = _window(bgr.shape[0], bgr.shape[1], crop, rng)
            top, left, height, width = window
            # The PNG holds the space's channels in order; OpenCV decodes them reversed.
            decoded[space] = cv2.cvtColor(bgr[top : top + height, left : left + width], cv2.COLOR_BGR2RGB)
        return decoded[space]

    try:
        # torch interleaves the planes about three times faster than np.concatenate.
        stacked = torch.cat([torch.from_numpy(plane(space)) for space in spaces], dim=2)
        if flip:  # (H, W, C): the width axis, every space's channels alike
            stacked = stacked.flip(1)
        label, meta = int(sample["cls"]), json.loads(sample["json"])
    except (KeyError, ValueError, RuntimeError, cv2.error) as error:  # members missing or garbled
        raise record_error(sample, f"cannot be decoded ({type(error).__name__}: {error})") from None
    return {"image": stacked.permute(2, 0, 1), "label": label, "meta": meta, "key": sample["__key__"]}


def _decode_png(data: bytes) -> np.ndarray | None:
    """cv2.imdecode without OpenCV's log lines about a broken PNG: the RecordError raised for it
    is the one line the user is meant to see."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    finally:
        logging.setLogLevel(level)


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
    """A picklable stage that decodes raw samples. Training windows and horizontal flips (`flip`:
    half of the samples, at random) are drawn per sample, seeded by (seed, sample key): the same
    sample gets the same crop and flip whatever the order, worker or samples skipped before it."""

    def __init__(
        self, spaces: tuple[str, ...], crop: int | None, random_crop: bool, seed: int, flip: bool = False
    ):  # spaces: those decoded (`loader_spaces`: RGB alone when the colour is made on the device)
        self.spaces, self.crop, self.random_crop, self.seed = spaces, crop, random_crop, seed
        self.flip = flip and random_crop  # never at evaluation (centre crops)

    def flips(self, key: str) -> bool:
        """Whether the sample `key` is mirrored (its own draw: the crop's draws stay as they were)."""
        return self.flip and random.Random(f"{self.seed}/{key}/flip").random() < 0.5

    def decode(self, sample: dict) -> dict:
        rng = random.Random(f"{self.seed}/{sample['__key__']}") if self.random_crop else None
        return decode_sample(sample, self.spaces, self.crop, rng, self.flips(sample["__key__"]))

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
    flip: bool = False,
    colour_on: str = "host",
) -> wds.DataPipeline:
    """A WebDataset pipeline over one split: shards split across nodes and workers; with `train`,
    every shard once in a seeded order (`pass_order`), a sample shuffle buffer and random crops
    (and with `flip`, half of the samples mirrored), else file order and centre crops.
    `resampled` draws shards with replacement forever (fixed-length epochs for DDP). Every random
    choice is seeded by `seed`, the node and the worker: the same seed gives the same stream.
    With `decode=False` the samples stay raw (bytes per member), for stages that pick samples
    before paying for their decoding; `Decoder` decodes them later. `worker_shift` rotates the
    roles of the DataLoader workers (see `worker_role`). `split_nodes=False` gives this process
    every shard even under torchrun (one rank evaluating a whole split). With `colour_on`
    `device`, the samples are decoded to RGB alone (3 channels, whatever `spaces` holds): the
    caller makes `spaces` from the batch (`ffx.model.colour.rgb_to_spaces`)."""
    shard_set = open_shards(shards, split)
    spaces = parse_spaces(spaces)
    check_spaces(shard_set, spaces, colour_on, str(shards))
    if resampled:
        role_seed = _RoleSeed(worker_shift)
        stages = [wds.ResampledShards(shard_set.urls, seed=seed, worker_seed=role_seed, deterministic=True)]
    else:
        urls = shard_set.urls
        if train:
            urls = [urls[index] for index in pass_order(len(urls), seed)]
        stages = [wds.SimpleShardList(urls)]
        if split_nodes:
            stages.append(wds.split_by_node)
    stages += [SplitByWorker(worker_shift), read_shards]
    if train:
        stages.append(wds.shuffle(shuffle_buffer, rng=random.Random(seed + 1)))
    if decode:
        stages.append(Decoder(loader_spaces(spaces, colour_on), crop, train, seed, train and flip))
    return wds.DataPipeline(*stages)


def pass_order(shards: int, seed: int) -> list[int]:
    """The order in which a training pass reads `shards` shards (indices), seeded: every shard once."""
    order = list(range(shards))
    random.Random(seed).shuffle(order)
    return order


def fetch_samples(url: str, keys: Iterable[str]) -> dict[str, dict]:
    """The raw samples `keys` of one shard, as the stream gives them (`__key__`, `__url__`, a bytes
    value per member). A local shard is read by seeking from header to header (only the wanted
    members' data is read), any other URL as a stream. A key the shard lacks is a RecordError."""
    wanted, found = set(keys), {}
    path = Path(url)
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    key, suffix = wds.tariterators.base_plus_ext(member.name)
                    if key in wanted and member.isreg():
                        sample = found.setdefault(key, {"__key__": key, "__url__": url})
                        sample[suffix.lower()] = archive.extractfile(member).read()
        except (OSError, tarfile.TarError) as error:
            raise record_error({"__url__": url, "__key__": "?"}, f"unreadable tar ({error})") from None
    else:
        for sample in read_shards([{"url": url}]):
            if sample["__key__"] in wanted:
                found[sample["__key__"]] = sample
    missing = sorted(wanted - set(found))
    if missing:
        raise record_error(
            {"__url__": url, "__key__": missing[0]}, "no longer in the shard (was it rebuilt?)"
        )
    return found


def read_shards(sources: Iterable[dict]) -> Iterator[dict]:
    """Raw samples of each shard ({"url": ...} in), read by WebDataset; a shard that cannot be
    opened or read stops the stream with a RecordError naming it and the sample being read."""
    for source in sources:
        url, member = source["url"], _LastMember()
        try:
            yield from wds.tarfile_samples([{"url": url}], rename_files=member)
        except Exception as error:  # WebDataset's default handler re-raises whatever went wrong
            # Its handlers add " @ <stream>" and the stream and URL to the arguments: keep the reason.
            reason = str(error.args[0]).split(" @ ")[0] if error.args else ""
            key = wds.tariterators.base_plus_ext(member.name)[0] or member.name or "?"
            raise record_error(
                {"__url__": url, "__key__": key}, f"unreadable tar ({type(error).__name__}: {reason})"
            ) from None


class _LastMember:
    """WebDataset's `rename_files` hook, which sees each member's name before its data is read."""

    name = ""

    def __call__(self, name: str) -> str:
        self.name = name
        return name


@dataclass(frozen=True)
class _Raised:
    """An FfxError raised in a loader worker, passed on as a batch: left to propagate, torch would
    re-raise it in the main process as a new error whose message is the worker's whole traceback."""

    error: FfxError


def send_errors(batches: Iterable) -> Iterator:
    """The last stage in a loader worker: an FfxError ends the stream as a `_Raised` batch."""
    try:
        yield from batches
    except FfxError as error:
        yield _Raised(error)


def raise_sent_errors(batches: Iterable) -> Iterator:
    """The first stage after the loader, in the main process: re-raise what `send_errors` sent."""
    for batch in batches:
        if isinstance(batch, _Raised):
            raise batch.error
        yield batch


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
    """Batches of `dataset` from `workers` processes (uint8 tensors; pin memory for a GPU); an
    FfxError in a worker (an unreadable record) is raised as itself, its one-line message kept."""
    batched = dataset.compose(wds.batched(batch_size, collation_fn=collate, partial=True), send_errors)
    loader = wds.WebLoader(batched, batch_size=None, num_workers=workers, pin_memory=pin_memory)
    return loader.compose(raise_sent_errors)
