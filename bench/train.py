"""Benchmark of `ffx train`'s input pipeline against its training step, in one run.

Inputs (untimed): tests/generated.py's build with 512x512 face crops (frames of the real clips in
../shared/media/videos; smooth random textures with --no-media), made without extract or crop, then
`run_shard(build, spaces=(rgb, lab, hsv, ycbcr))` cut so that the train split holds several shards.

Timed in alternating rounds, on this machine's CPU (torch.set_num_threads(all cores)):
- loader: `epoch_batches(config, epoch, place("cpu"))` for epoch 0, 1, ..., the stream `ffx train`
  makes (class-balanced P x K batches, random 448 crops, --workers processes), each batch moved to
  the device and normalised as the loop's step receives it; its start-up is the first batch, then
  samples/s over --batches batches. With the four colour spaces (12 channels) and with rgb only;
- step: `TrainStep(MCXAPI(ModelConfig(--backbone, spaces, 2 classes)), config)` forward, backward and
  SGD step in full precision on one fixed batch already on the device: no data loading; --warmup
  untimed steps (its start-up), then --steps timed ones; the backbone learning, and frozen.

The ratio loader samples/s / step samples/s says whether the loader keeps up: it must be > 1 (here
the two are timed apart; in `ffx train` they share the cores). With a GPU (unless --no-gpu), also the
loader to the GPU and --gpu-backbone's step with bf16 autocast and channels_last.

    .venv/bin/python bench/train.py            # defaults: resnet18, 20 loader batches, 3 steps
"""

from __future__ import annotations

import gc
import itertools
import math
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import common
import torch
from common import CROP_SIDE, FACELESS_KEY, TRAIN_SHARDS
from common.harness import Bench, Part, Stopwatch, Timing

SPACE_SETS = (("rgb", "lab", "hsv", "ycbcr"), ("rgb",))
BENCH = Bench("train", __doc__, rounds=1, max_wait=600.0)
BENCH.option("--videos-per-label", 20, "real and fake videos each", minimum=1)
BENCH.option("--frames", 8, "face crops per video", minimum=1)
BENCH.option("--shard-size", None, f"samples per shard (None: the train samples / {TRAIN_SHARDS})", minimum=1)
BENCH.option("--batches", 20, "loader batches timed, after the first", minimum=1)
BENCH.option("--workers", 2, "loader worker processes", minimum=0)
BENCH.option("--classes-per-batch", 2, "P of the P x K batches", minimum=1)
BENCH.option("--images-per-class", 9, "K of the P x K batches", minimum=1)
BENCH.option("--crop", 448, f"random crop side (at most {CROP_SIDE})", minimum=1)
BENCH.option("--backbone", "resnet18", "timm backbone of the CPU step, built without weights")
BENCH.option("--steps", 3, "training steps timed", minimum=1)
BENCH.option("--warmup", 2, "untimed training steps before the timed ones", minimum=0)
BENCH.option("--gpu-backbone", "legacy_xception", "timm backbone of the GPU step, when there is a GPU")
BENCH.option("--gpu-steps", 20, "GPU training steps timed", minimum=1)
BENCH.option("--no-gpu", False, "time on the CPU only, even with a GPU")
BENCH.option("--no-media", False, "random textures instead of the real clips' frames")


def make_shards(work: Path, videos_per_label: int, frames: int, shard_size: int | None, clips: list[Path]):
    """The generated build, sharded in the four spaces; the shards folder and what the inputs are."""
    import pyarrow.parquet as pq

    from ffx.pipeline.stages.shard import run_shard

    build, origin = common.cropped_build(work, videos_per_label, frames, clips)
    videos = pq.read_table(build / "videos.parquet").to_pylist()
    train = sum(video["split"] == "train" and video["key"] != FACELESS_KEY for video in videos)
    shard_size = shard_size or max(1, math.ceil(train * frames / TRAIN_SHARDS))
    report = run_shard(build, spaces=SPACE_SETS[0], max_count=shard_size, show_progress=False)
    failed = [item for item in report.failed if item[0] != FACELESS_KEY]  # that one has no crops
    if not report.merged or failed:
        sys.exit(f"shard failed: merged {report.merged}, failed {failed[:3]}")
    splits = report.extra["index"]["splits"]
    return build / "shards", {"origin": origin, "shard_size": shard_size, "splits": splits}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def receive(batch: dict, placement, config) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch as the loop's step gets it: normalised images on the device (channels_last on
    CUDA when the config says so) and labels on the device."""
    from ffx.model.checkpoint import normalise

    images = normalise(batch["image"], placement.device)
    if placement.device.type == "cuda" and config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["label"].to(placement.device, non_blocking=True)


def time_loader(config, placement, batches: int, kept: list | None = None, _round: int = 0) -> Timing:
    """`epoch_batches` epoch after epoch, as the loop iterates it (a worker's `Short` and `Carry`
    skipped); the first batch (uint8, on the host) goes to `kept`."""
    from ffx.train.stream import epoch_batches

    name = f"loader {','.join(config.spaces)} ({3 * len(config.spaces)} ch, {placement.device.type})"
    gc.collect()
    stopwatch = Stopwatch()
    iterator = (item for epoch in itertools.count() for item in epoch_batches(config, epoch, placement))
    iterator = (item for item in iterator if isinstance(item, dict))
    first = next(iterator)
    receive(first, placement, config)
    synchronize(placement.device)
    stopwatch.startup_done()  # the first batch: workers starting, shards opening, the first shuffle
    samples = sum(len(receive(next(iterator), placement, config)[1]) for _ in range(batches))
    synchronize(placement.device)
    stopwatch.stop()
    iterator.close()  # shuts the workers down and joins them, so their CPU time is counted
    del iterator
    gc.collect()
    if kept is not None and not kept:
        kept.append({"image": first["image"].clone(), "label": first["label"].clone()})
    return stopwatch.timing(
        name, samples, "samples", spaces=list(config.spaces), device=str(placement.device)
    )


def time_step(
    config, classes: int, kept: list, placement, dtype, warmup: int, steps: int, frozen: bool, _round: int = 0
) -> Timing:
    """`TrainStep` forward + backward + SGD step on one fixed batch (kept[0]), as the loop runs it (wrapped in
    torch.compile with config.compile), the backbone learning or frozen (its forward under no_grad)."""
    from ffx.model.mcx_api import MCXAPI, ModelConfig
    from ffx.train.loop import TrainStep

    device = placement.device
    torch.manual_seed(config.seed)
    model = MCXAPI(ModelConfig(config.backbone, config.spaces, classes, config.hidden, config.dropout)).to(
        device
    )
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    trainer = TrainStep(model, config)
    trainer.frozen = frozen
    wrapped = torch.compile(trainer) if config.compile else trainer  # as `ffx train --compile` wraps it
    groups = [{"params": model.backbone.parameters(), "lr": 0.0 if frozen else config.lr}]
    groups.append({"params": model.head.parameters()})
    optimizer = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    images, labels = receive(kept[0], placement, config)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _parts = wrapped(images, labels)
        loss.backward()
        optimizer.step()

    gc.collect()
    synchronize(device)
    stopwatch = Stopwatch()
    for _ in range(warmup):
        step()
    synchronize(device)
    stopwatch.startup_done()  # the untimed warm-up steps (lazy set-up, autotuning, compiling)
    for _ in range(steps):
        step()
    synchronize(device)
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    how = precision + (", compiled" if config.compile else "") + (", frozen backbone" if frozen else "")
    name = f"step {config.backbone} {3 * len(config.spaces)} ch, {how} ({device.type})"
    return stopwatch.timing(
        name, steps * len(labels), "samples", spaces=list(config.spaces), device=str(device)
    )


def step_parts(
    configs: list, classes: int, placement, dtype, warmup: int, steps: int, batches: int
) -> list[Part]:
    """Per config, a loader part and its step parts (learning, frozen) on the loader's first batch;
    the loader is compared with each of its steps."""
    parts, where = [], placement.device.type
    for config in configs:
        kept: list[dict] = []
        spaces = ",".join(config.spaces)
        parts.append(
            Part(f"loader {spaces} ({where})", partial(time_loader, config, placement, batches, kept))
        )
        for frozen in (False, True):
            step = partial(time_step, config, classes, kept, placement, dtype, warmup, steps, frozen)
            parts.append(Part(f"step {config.backbone} {spaces}{' frozen' * frozen} ({where})", step))
        parts[-3].versus = (parts[-2].name, parts[-1].name)
    return parts


def run(args, work: Path) -> dict:
    import timm

    from ffx.model.checkpoint import place
    from ffx.train.config import make_config
    from ffx.train.stream import check_shards

    if args.crop > CROP_SIDE:
        raise SystemExit(f"--crop must be at most {CROP_SIDE}, the crops' side")
    torch.set_num_threads(common.available_cores())
    print(f"Generating the build and its shards in {work} (untimed) ...", flush=True)
    shards, inputs = make_shards(
        work,
        args.videos_per_label,
        args.frames,
        args.shard_size,
        [] if args.no_media else common.media_videos(),
    )
    common.warm_page_cache(sorted(shards.glob("*.tar")))
    options = {"crop": args.crop, "classes_per_batch": args.classes_per_batch, "workers": args.workers}
    options |= {"images_per_class": args.images_per_class, "shards": str(shards), "run": str(work / "run")}
    configs = [make_config(backbone=args.backbone, spaces=spaces, **options) for spaces in SPACE_SETS]
    classes, rarest = check_shards(configs[0])
    # As `ffx train` resolves it: one epoch is one pass over the rarest class's samples.
    per_epoch = max(1, rarest * classes // (args.classes_per_batch * args.images_per_class))
    configs = [replace(config, steps_per_epoch=per_epoch) for config in configs]
    parts = step_parts(configs, classes, place("cpu"), None, args.warmup, args.steps, args.batches)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_configs = [replace(c, backbone=args.gpu_backbone, channels_last=True) for c in configs]
        warmup = max(args.warmup, 2)
        parts += step_parts(
            gpu_configs, classes, place("cuda"), torch.bfloat16, warmup, args.gpu_steps, args.batches
        )
    results = BENCH.compare(parts, args.rounds)
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    env = common.environment(
        torch=torch.__version__, torch_threads=torch.get_num_threads(), timm=timm.__version__
    )
    return results | {"environment": env | {"cuda": cuda}, "inputs": inputs, "classes": classes}


if __name__ == "__main__":
    BENCH.main(run)
