"""Benchmark of `ffx train`'s input pipeline against its training step, in one run.

Inputs (not timed): a generated build of 512x512 face crops made without extract or crop, by
tests/generated.py's `make_cropped_build` (a `real/` + `fake/` tree of placeholder clips indexed
with the `folder` recipe, whose seeded split puts about 80% of the videos in train; crop PNGs,
frames.parquet and faces.parquet written directly, stamped as a real run would), then
`run_shard(build, spaces=(rgb, lab, hsv, ycbcr), max_count=...)`, cut so that the train split
holds several shards (8 by default).
The crops are frames of the real clips in ../shared/media/videos (a centred square, resized to
512), so the PNGs decode like real face crops; without the clips (or with --no-media) they are
smooth random textures. Default: 2 x 20 videos x 8 crops.

Timed, on this machine's CPU (torch.set_num_threads(all cores)):

- loader: `epoch_batches(config, epoch, place("cpu"))` for epoch 0, 1, ..., the stream `ffx
  train` makes (one pass over the shards per epoch, steps_per_epoch resolved as `ffx train`
  does, class-balanced P x K batches, 2 classes x 9 images by default as the data has 2
  classes, random 448 crops, --workers processes), each batch moved to the device and normalised
  with `normalise`, which is what the loop's step receives. Reported: the seconds to the first
  batch (workers starting, shards opening, the shuffle buffer's first fill; the start-up),
  then samples/s over the next --batches batches (later epochs' start-ups included, as in
  training). Once with the four colour
  spaces (12 channels), once with rgb only (the same shards; only rgb is decoded);
- step: `TrainStep(MCXAPI(ModelConfig(--backbone, spaces, num_classes=2)), config)` forward,
  backward and SGD step (the loop's optimiser: two parameter groups, momentum, weight decay) in
  full precision, on one fixed batch already on the device and normalised (a loader batch, taken
  untimed): no data loading. --warmup untimed steps, then --steps timed ones; once with the
  backbone learning, once frozen as in the first `freeze_epochs` epochs (the backbone's forward
  under no_grad, only the head learns), for each spaces setting.

The ratio loader samples/s / step samples/s says whether the loader keeps up: it must be > 1.
On a CPU-only machine the comparison point is a small timm backbone's step on the same cores;
the two are timed apart here, whereas in `ffx train` the loader's workers and the step share the
cores. With a GPU (torch.cuda.is_available(), unless --no-gpu), also: the loader with the GPU
placement (pinned memory, the copy to the GPU, normalising and channels_last there), and the step
of --gpu-backbone (legacy_xception, the paper's) at 448x448 with bf16 autocast and channels_last,
timed between torch.cuda.synchronize() calls; that ratio is the one that matters for real runs.

Each timed part reports wall seconds, the CPU seconds it used (this process and its reaped loader
workers) and the CPU seconds other processes used meanwhile (a large figure means a busy machine:
the figures are then too low). Before each timed part the benchmark waits until no pytest or
other bench/ script runs (checking every 10 s, for at most --max-wait seconds) and syncs dirty
pages. Shards are read once before timing, so they are in the page cache.

Run from the repository root:

    .venv/bin/python bench/train.py            # defaults: resnet18, 20 loader batches, 3 steps
    .venv/bin/python bench/train.py --help

The figures are printed and written to bench/results/train-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from common import (
    CROP_SIDE,
    MEDIA_DIR,
    TRAIN_SHARDS,
    Quiet,
    Stopwatch,
    Timing,
    add_max_wait_option,
    add_shard_size_option,
    add_workdir_options,
    arguments_record,
    available_cores,
    environment,
    media_videos,
    print_environment,
    print_machine_load,
    print_timings,
    run_and_report,
    square_crop,
    texture,
    warm_page_cache,
)

if TYPE_CHECKING:
    from ffx.model.checkpoint import Placement
    from ffx.train.config import TrainConfig

POOL_FRAMES = 40  # frames kept per clip, evenly spread over it
SPACE_SETS = (("rgb", "lab", "hsv", "ycbcr"), ("rgb",))
FACELESS_KEY = "fake__none"  # make_cropped_build's video without a face


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--videos-per-label", type=int, default=20, help="real and fake videos each (default: 20)"
    )
    parser.add_argument("--frames", type=int, default=8, help="face crops per video (default: 8)")
    add_shard_size_option(parser)
    parser.add_argument(
        "--batches", type=int, default=20, help="loader batches timed, after the first (default: 20)"
    )
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes (default: 2)")
    parser.add_argument(
        "--classes-per-batch", type=int, default=2, help="P of the P x K batches (default: 2)"
    )
    parser.add_argument("--images-per-class", type=int, default=9, help="K of the P x K batches (default: 9)")
    parser.add_argument("--crop", type=int, default=448, help="random crop side (default: 448)")
    parser.add_argument(
        "--backbone",
        default="resnet18",
        help="timm backbone of the CPU step, built without weights (default: resnet18)",
    )
    parser.add_argument("--steps", type=int, default=3, help="training steps timed (default: 3)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed training steps before the timed ones (default: 2)"
    )
    parser.add_argument(
        "--gpu-backbone",
        default="legacy_xception",
        help="timm backbone of the GPU step, when there is a GPU (default: legacy_xception)",
    )
    parser.add_argument("--gpu-steps", type=int, default=20, help="GPU training steps timed (default: 20)")
    parser.add_argument("--no-gpu", action="store_true", help="time on the CPU only, even with a GPU")
    parser.add_argument(
        "--no-media", action="store_true", help=f"random textures instead of {MEDIA_DIR} clips"
    )
    add_workdir_options(parser, "the build")
    add_max_wait_option(parser, default=600.0)
    args = parser.parse_args(argv)
    positive = ("videos_per_label", "frames", "batches", "classes_per_batch", "images_per_class", "crop")
    if min(getattr(args, name) for name in (*positive, "steps", "gpu_steps")) < 1:
        parser.error(
            "--videos-per-label, --frames, --batches, --classes-per-batch, --images-per-class, "
            "--crop, --steps and --gpu-steps must be >= 1"
        )
    if args.workers < 0 or args.warmup < 0 or (args.shard_size is not None and args.shard_size < 1):
        parser.error("--workers and --warmup must be >= 0, --shard-size >= 1")
    if args.crop > CROP_SIDE:
        parser.error(f"--crop must be at most {CROP_SIDE}, the crops' side")
    return args


# ---------------------------------------------------------------------------------------------
# Inputs (not timed)


def clip_pool(clip: Path, side: int) -> list[np.ndarray]:
    """POOL_FRAMES frames spread evenly over a clip (decode order), as `side` squares."""
    import av

    with av.open(str(clip)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    chosen = sorted({position * len(frames) // POOL_FRAMES for position in range(POOL_FRAMES)})
    return [square_crop(frames[index], side) for index in chosen]


def _number(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class CropPixels:
    """make_cropped_build's `pixels`: a video's crops are successive pool frames of one clip (the
    clip and start chosen by the key's hash), or seeded textures without clips."""

    def __init__(self, clips: list[Path], side: int):
        self.pools = [clip_pool(clip, side) for clip in clips]

    def __call__(self, key: str, frame: int, side: int) -> np.ndarray:
        number = _number(key)
        if not self.pools:
            return texture(_number(f"{key}/{frame}"), side)
        pool = self.pools[number % len(self.pools)]
        return pool[(number // len(self.pools) + frame) % len(pool)]


def make_shards(work: Path, args: argparse.Namespace, clips: list[Path] | None = None) -> tuple[Path, dict]:
    """The generated build, sharded, its crops taken from `clips` (default: the real clips, none
    with --no-media); the shards folder and what the inputs are, in a dict."""
    from ffx.pipeline.engine.builddir import BuildDir
    from ffx.pipeline.stages.shard import run_shard
    from tests.generated import make_cropped_build

    if clips is None:
        clips = [] if args.no_media else media_videos()
    pixels = CropPixels(clips, CROP_SIDE)
    build = make_cropped_build(
        work, videos_per_label=args.videos_per_label, frames=args.frames, side=CROP_SIDE, pixels=pixels
    )
    videos = pq.read_table(BuildDir(build).videos).to_pylist()
    train_videos = sum(1 for video in videos if video["split"] == "train" and video["key"] != FACELESS_KEY)
    shard_size = args.shard_size or max(1, math.ceil(train_videos * args.frames / TRAIN_SHARDS))
    report = run_shard(build, spaces=SPACE_SETS[0], max_count=shard_size, show_progress=False)
    failed = [item for item in report.failed if item[0] != FACELESS_KEY]  # that one has no crops
    if not report.merged or failed:
        sys.exit(f"shard failed: merged {report.merged}, failed {failed[:3]}")
    splits: dict[str, dict] = {}
    for entry in report.extra["index"]["shards"]:
        split = splits.setdefault(entry["split"], {"shards": 0, "samples": 0, "bytes": 0, "labels": {}})
        split["shards"] += 1
        split["samples"] += entry["samples"]
        split["bytes"] += entry["bytes"]
        for label, count in entry["labels"].items():
            split["labels"][label] = split["labels"].get(label, 0) + count
    origin = f"frames of {', '.join(clip.name for clip in clips)}" if clips else "smooth random textures"
    inputs = {
        "origin": origin,
        "crop_side": CROP_SIDE,
        "videos": len(videos),
        "frames_per_video": args.frames,
        "shard_size": shard_size,
        "spaces_stored": list(SPACE_SETS[0]),
        "splits": dict(sorted(splits.items())),
    }
    return BuildDir(build).shards, inputs


# ---------------------------------------------------------------------------------------------
# Timed parts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def receive(batch: dict, placement: Placement, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch as the loop's step gets it: normalised images on the device (channels_last
    on CUDA when the config says so) and labels on the device."""
    from ffx.model.checkpoint import normalise

    images = normalise(batch["image"], placement.device)
    if placement.device.type == "cuda" and config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["label"].to(placement.device, non_blocking=True)


def loader_batches(config: TrainConfig, placement: Placement) -> Iterator[dict]:
    """The batches `ffx train` gets, epoch after epoch (each epoch one pass, its loader workers
    started anew); a worker's `Short` (its shards ran out) and `Carry` (leftovers) are skipped."""
    from ffx.train.stream import epoch_batches

    for epoch in itertools.count():
        for item in epoch_batches(config, epoch, placement):
            if isinstance(item, dict):
                yield item


def time_loader(config: TrainConfig, placement: Placement, batches: int, quiet: Quiet) -> tuple[Timing, dict]:
    """`epoch_batches` iterated as the loop does; the timing and the first batch (uint8, on the host)."""
    spaces = ",".join(config.spaces)
    name = f"loader {spaces} ({3 * len(config.spaces)} ch, {placement.device.type})"
    gc.collect()
    quiet.wait(name)
    stopwatch = Stopwatch()
    iterator = loader_batches(config, placement)
    first = next(iterator)
    receive(first, placement, config)
    synchronize(placement.device)
    stopwatch.startup_done()  # the first batch: workers starting, shards opening, the first shuffle
    samples = 0
    for _ in range(batches):
        _images, labels = receive(next(iterator), placement, config)
        samples += len(labels)
    synchronize(placement.device)
    stopwatch.stop()
    iterator.close()  # shuts the workers down and joins them, so their CPU time is counted
    del iterator
    gc.collect()
    timing = stopwatch.timing(
        name,
        samples,
        "samples",
        spaces=list(config.spaces),
        device=str(placement.device),
        workers=config.workers,
        batches=batches,
    )
    kept = {"image": first["image"].clone(), "label": first["label"].clone()}
    return timing, kept


def time_steps(
    config: TrainConfig,
    classes: int,
    batch: dict,
    placement: Placement,
    dtype: torch.dtype | None,
    warmup: int,
    steps: int,
    quiet: Quiet,
    states: tuple[bool, ...] = (False, True),
) -> list[Timing]:
    """`TrainStep` forward + backward + SGD step on one fixed batch, as the loop runs it (wrapped
    in torch.compile with config.compile): for each of `states`, the backbone learning (False),
    then frozen (True: its forward under no_grad, its learning rate 0)."""
    from ffx.model.mcx_api import MCXAPI, ModelConfig
    from ffx.train.loop import TrainStep

    device = placement.device
    torch.manual_seed(config.seed)
    model = MCXAPI(ModelConfig(config.backbone, config.spaces, classes, config.hidden, config.dropout))
    model.to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    trainer = TrainStep(model, config)
    wrapped = torch.compile(trainer) if config.compile else trainer  # as `ffx train --compile` wraps it
    optimizer = torch.optim.SGD(
        [{"params": model.backbone.parameters()}, {"params": model.head.parameters()}],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    images, labels = receive(batch, placement, config)
    synchronize(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _parts = wrapped(images, labels)
        loss.backward()
        optimizer.step()

    timings = []
    precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
    for frozen in states:
        state = "frozen backbone" if frozen else "backbone learning"
        how = precision + (", compiled" if config.compile else "")
        name = f"step {config.backbone} {3 * len(config.spaces)} ch, {how}, {state} ({device.type})"
        trainer.frozen = frozen
        optimizer.param_groups[0]["lr"] = 0.0 if frozen else config.lr
        optimizer.param_groups[1]["lr"] = config.lr
        gc.collect()
        quiet.wait(name)
        stopwatch = Stopwatch()
        for _ in range(warmup):
            step()
        synchronize(device)
        stopwatch.startup_done()  # the untimed warm-up steps (lazy set-up, autotuning, compiling)
        for _ in range(steps):
            step()
        synchronize(device)
        timings.append(
            stopwatch.timing(
                name,
                steps * len(labels),
                "samples",
                backbone=config.backbone,
                spaces=list(config.spaces),
                device=str(device),
                precision=precision,
                frozen=frozen,
                batch_size=len(labels),
                warmup_steps=warmup,
                steps=steps,
            )
        )
        print(f"  {name}: {timings[-1].rate:.2f} samples/s", flush=True)
    return timings


# ---------------------------------------------------------------------------------------------
# Report


def versions() -> dict:
    """The environment with torch's threads, the libraries' versions and the GPU (None without one)."""
    import timm
    import webdataset

    return environment(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        timm=timm.__version__,
        webdataset=webdataset.__version__,
        cv2=cv2.__version__,
        numpy=np.__version__,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )


def ratios(loaders: list[Timing], steps: list[Timing]) -> list[dict]:
    """Loader / step samples/s for every step and the loader of the same spaces and device type."""
    rows = []
    for step in steps:
        device_type = torch.device(step.extra["device"]).type
        for loader in loaders:
            same_device = torch.device(loader.extra["device"]).type == device_type
            if loader.extra["spaces"] == step.extra["spaces"] and same_device:
                rows.append(
                    {
                        "loader": loader.name,
                        "step": step.name,
                        "loader_samples_per_second": loader.rate,
                        "step_samples_per_second": step.rate,
                        "ratio": loader.rate / step.rate if step.rate else None,
                    }
                )
    return rows


def print_report(results: dict) -> None:
    env, inputs = results["environment"], results["inputs"]
    print_environment(env)
    split_text = ", ".join(
        f"{name} {split['samples']} samples in {split['shards']} shards ({split['bytes'] / 1e6:.0f} MB)"
        for name, split in inputs["splits"].items()
    )
    print(
        f"Inputs: {inputs['videos']} videos x {inputs['frames_per_video']} crops of "
        f"{inputs['crop_side']}x{inputs['crop_side']} ({inputs['origin']}), spaces "
        f"{','.join(inputs['spaces_stored'])}: {split_text}"
    )
    arguments = results["arguments"]
    print(
        f"Batches: {arguments['classes_per_batch']} classes x {arguments['images_per_class']} images, "
        f"random {arguments['crop']} crops, {arguments['workers']} loader workers"
    )

    print_timings(
        "Loaders (start-up: to the first batch):", results["loaders"], rate="samples/s", startup=True
    )
    print_timings("Steps (start-up: the warm-up steps):", results["steps"], rate="samples/s", startup=True)
    print("\nloader / step samples/s (the loader keeps up when > 1):")
    for row in results["ratios"]:
        ratio = row["ratio"]
        verdict = "n/a" if ratio is None else ("ok" if ratio > 1 else "LOADER IS THE BOTTLENECK")
        print(f"  {row['step']:<66}{_format_ratio(ratio):>9}  {verdict}")
    if not env["cuda"]:
        print(
            f"  (CPU only: the comparison point is a small backbone's step, {arguments['backbone']}, on the "
            "same cores, timed apart from the loader; in `ffx train` both share the cores. With a GPU this "
            f"benchmark also times {arguments['gpu_backbone']} with bf16 and channels_last.)"
        )
    elif not arguments["no_gpu"]:
        print(
            f"  (GPU: the (cuda) rows, the loader to the GPU against {arguments['gpu_backbone']}'s bf16 "
            "step, are what a real run sees; the (cpu) rows compare the loader with "
            f"{arguments['backbone']} on this machine's cores. The loader used {arguments['workers']} "
            f"worker processes of this machine's {env['cpus_available']} cores.)"
        )
    print_machine_load(results["loaders"] + results["steps"], results["waits"])


def _format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict:
    from ffx.model.checkpoint import place
    from ffx.train.config import make_config
    from ffx.train.stream import check_shards

    torch.set_num_threads(available_cores())
    print(f"Generating the build and its shards in {workdir} (untimed) ...", flush=True)
    shards, inputs = make_shards(workdir, args)
    warm_page_cache(sorted(shards.glob("*.tar")))

    configs = [
        make_config(
            shards=str(shards),
            run=str(workdir / "run"),
            backbone=args.backbone,
            crop=args.crop,
            classes_per_batch=args.classes_per_batch,
            images_per_class=args.images_per_class,
            workers=args.workers,
            spaces=spaces,
        )
        for spaces in SPACE_SETS
    ]
    classes, rarest = check_shards(configs[0])
    # As `ffx train` resolves it: one epoch is one pass over the rarest class's samples.
    batch = args.classes_per_batch * args.images_per_class
    configs = [replace(config, steps_per_epoch=max(1, rarest * classes // batch)) for config in configs]
    cpu = place("cpu")
    quiet = Quiet(args.max_wait)
    loaders, steps, first_batches = [], [], []
    for config in configs:
        print(f"Timing the loader, {','.join(config.spaces)} on the CPU ...", flush=True)
        timing, batch = time_loader(config, cpu, args.batches, quiet)
        loaders.append(timing)
        first_batches.append(batch)
    for config, batch in zip(configs, first_batches):
        print(
            f"Timing the training step, {config.backbone} {','.join(config.spaces)} on the CPU ...",
            flush=True,
        )
        steps += time_steps(config, classes, batch, cpu, None, args.warmup, args.steps, quiet)

    if torch.cuda.is_available() and not args.no_gpu:
        gpu = place("cuda")
        for config, batch in zip(configs, first_batches):
            gpu_config = replace(config, backbone=args.gpu_backbone, channels_last=True)
            print(f"Timing the loader, {','.join(config.spaces)} to the GPU ...", flush=True)
            loaders.append(time_loader(gpu_config, gpu, args.batches, quiet)[0])
            print(
                f"Timing the training step, {args.gpu_backbone} {','.join(config.spaces)} on the GPU ...",
                flush=True,
            )
            steps += time_steps(
                gpu_config, classes, batch, gpu, torch.bfloat16, max(args.warmup, 2), args.gpu_steps, quiet
            )
            gc.collect()
            torch.cuda.empty_cache()

    return {
        "environment": versions(),
        "arguments": arguments_record(args),
        "inputs": inputs,
        "classes": classes,
        "loaders": [timing.as_dict() for timing in loaders],
        "steps": [timing.as_dict() for timing in steps],
        "ratios": ratios(loaders, steps),
        "waits": quiet.waits,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_and_report("train", args, run, print_report)


if __name__ == "__main__":
    main()
