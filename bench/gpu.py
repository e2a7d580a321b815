"""GPU benchmark, made to run as it is on a lent CUDA machine in under 5 minutes (without CUDA it says
why, exit 0). Each part timed between torch.cuda.synchronize() calls:
- detection: ffx's batched MTCNN (`FaceDetector.detect_video`) over the first --frames frames of each
  real clip, per batch size, frames downscaled to 640 pixels (crop.detect_max_side) and at full
  resolution; frames/s, and the median IoU of the main box at 640 against full resolution;
- loader and step: bench/train.py's loader to the GPU against `TrainStep(MCXAPI(legacy_xception,
  4 spaces))` at 448x448 on the paper's 27-image batch, bf16, channels-last, eager and compiled;
- build: `python -m ffx.cli build folder` of the real clips on the GPU, as a user runs it.

    python bench/gpu.py --out DIR          # the JSON goes to DIR (default: bench/results/)
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import train
from common import MEDIA_DIR, environment, harness, read_video
from common.harness import RESULTS_DIR, Bench, Column, Part, Stopwatch

PACKED_MEDIA = RESULTS_DIR / "gpu-pack" / "media"  # where gpu_pack.py puts them
FULL_SIDE = 1 << 16  # a detect_max_side no frame reaches: full resolution
BENCH = Bench("gpu", __doc__, rounds=1, max_wait=0.0)  # a lent machine runs nothing else
BENCH.option("--out", RESULTS_DIR, "folder for the JSON", type=Path)
BENCH.option("--media", None, f"the real clips (None: {MEDIA_DIR / 'videos'}, else packed ones)", type=Path)
BENCH.option("--frames", 64, "frames per clip for detection", minimum=1)
BENCH.option("--batch-sizes", "1,8,32,64", "detection batch sizes, comma-separated")
BENCH.option("--steps", 20, "timed train steps", minimum=1)
BENCH.option("--warmup", 3, "untimed warm-up steps", minimum=0)
BENCH.option("--workers", 8, "loader worker processes", minimum=0)
BENCH.option("--batches", 40, "loader batches timed", minimum=1)
BENCH.option("--no-compile", False, "leave out the torch.compile step")
BENCH.option("--no-build", False, "leave out the end-to-end build")
BENCH.option("--step-batch", 27, "train step batch, the paper's 3 x 9", minimum=1)
BENCH.option("--cpu", False, "every part on the CPU (use small options): checks the procedure without CUDA")


def detect(clips: dict, found: dict, device: str, side: int, batch_size: int, _round: int = 0):
    """FaceDetector over every clip at one side and batch size; its detections go to `found`."""
    from ffx.pipeline.media.detect import DetectorSettings, FaceDetector

    detector = FaceDetector(DetectorSettings(side, 0.5), device=device, batch_size=batch_size)
    detector.detect_video(next(iter(clips.values()))[: batch_size + 1])  # warm-up (cuDNN, allocator)
    train.synchronize(torch.device(device))
    stopwatch = Stopwatch()
    found[(side, batch_size)] = {name: detector.detect_video(frames) for name, frames in clips.items()}
    train.synchronize(torch.device(device))
    label = "full" if side == FULL_SIDE else side
    return stopwatch.timing(f"MTCNN {label}, batch {batch_size}", sum(map(len, clips.values())), "frames")


def iou_rows(clips: dict, sizes: list[int], found: dict) -> list[dict]:
    """Per clip and batch size: the median IoU of the main (largest) box at 640 against full resolution."""
    from ffx.pipeline.media.faces import box_iou

    def main(detections) -> np.ndarray | None:
        boxes = [d.box for d in detections or []]
        return max(boxes, key=lambda box: (box[2] - box[0]) * (box[3] - box[1])) if boxes else None

    rows = []
    for size, name in ((size, name) for size in sizes for name in clips):
        pairs = zip(found[(640, size)][name], found[(FULL_SIDE, size)][name])
        mains = ((main(a), main(b)) for a, b in pairs)
        overlaps = [box_iou(a, b) for a, b in mains if a is not None and b is not None]
        median = float(np.median(overlaps)) if overlaps else None
        rows.append({"clip": name, "batch": size, "frames_both": len(overlaps), "median_iou": median})
    return rows


def ok_faces(build: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(build / "faces.parquet", columns=["status"]).column("status").to_pylist().count("ok")


def training_parts(args, work: Path, device: str, clips: list[Path]) -> tuple[list[Part], dict]:
    """The loader to the GPU and legacy_xception's step on the paper's batch, eager and compiled."""
    from ffx.model.checkpoint import place
    from ffx.train.config import make_config
    from ffx.train.stream import check_shards

    shards, inputs = train.make_shards(work, 30, 8, None, clips)  # its build: 2 classes
    options = {"backbone": "legacy_xception", "crop": 448, "classes_per_batch": 2, "images_per_class": 9}
    options |= {"workers": args.workers, "spaces": train.SPACE_SETS[0], "channels_last": True}
    config = make_config(shards=str(shards), run=str(work / "run"), **options)
    classes, rarest = check_shards(config)
    config = replace(config, steps_per_epoch=max(1, rarest * classes // 18))
    gpu, kept, batch = place(device), [], []

    def step(compiled: bool, _round: int):
        if not batch:  # the paper's batch, 3 classes x 9 images: the loader's first batch repeated
            images = kept[0]["image"].repeat(-(-args.step_batch // len(kept[0]["image"])), 1, 1, 1)
            batch.append({"image": images[: args.step_batch], "label": torch.arange(args.step_batch) % 3})
        timed = replace(config, compile=compiled)
        return train.time_step(timed, 3, batch, gpu, torch.bfloat16, args.warmup, args.steps, False)

    compiled = (False, True)[: 2 - args.no_compile]
    steps = [Part(f"step, {'compiled' if c else 'eager'}", partial(step, c)) for c in compiled]
    loader = partial(train.time_loader, config, gpu, args.batches, kept)
    return [Part("loader", loader, tuple(part.name for part in steps)), *steps], inputs


def print_report(results: dict) -> None:
    harness.print_comparison(results)
    names = ("clip", "batch", "frames_both", "median_iou")
    columns = [Column(name, name, ".3f" if name == "median_iou" else "") for name in names]
    harness.print_table("Main box at 640 against full size (median IoU):", columns, results["detection_iou"])
    if results.get("build_error"):
        print(f"build failed: {results['build_error']}")


def run(args, work: Path) -> dict:
    device = "cpu" if args.cpu else "cuda"
    folders = (Path(f) for f in (args.media, MEDIA_DIR / "videos", PACKED_MEDIA) if f)
    if (media := next((f for f in folders if any(f.glob("*.mp4"))), None)) is None:
        sys.exit(f"no clips: give --media DIR, or run bench/gpu_pack.py to pack them into {PACKED_MEDIA}")
    sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    clips, found = {video.stem: read_video(video, args.frames) for video in sorted(media.glob("*.mp4"))}, {}
    runs = [
        (side, size, partial(detect, clips, found, device, side, size))
        for side in (640, FULL_SIDE)
        for size in sizes
    ]
    results = BENCH.compare(
        [Part(f"MTCNN {side % FULL_SIDE or 'full'}, {size}", run) for side, size, run in runs], args.rounds
    )
    (Path(args.out) / "gpu-partial.json").write_text(json.dumps(results["timings"]))  # kept if stopped later
    parts, inputs = training_parts(args, work, device, sorted(media.glob("*.mp4")))
    training = BENCH.compare(parts, args.rounds)
    results = harness.merged(results, training)
    results |= {"detection_iou": iou_rows(clips, sizes, found), "inputs": inputs, "media": sorted(clips)}
    if not args.no_build:
        build, sampling = work / "media-build", ["--set", f"sampling=first:{args.frames}"] if args.cpu else []
        command = [
            sys.executable,
            "-m",
            "ffx.cli",
            "build",
            "folder",
            "--root",
            str(media),
            "--build",
            str(build),
        ]
        try:  # as a user runs it
            command += ["--device", device, *sampling]
            timing = harness.process(
                f"ffx build ({device})", command, build=build, items=partial(ok_faces, build)
            )
            results["timings"].append(timing.as_dict())
        except SystemExit as error:  # the figures so far still count
            results["build_error"] = str(error)[-2000:]
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return results | {"environment": environment(torch=torch.__version__, cuda=torch.version.cuda, gpu=gpu)}


if __name__ == "__main__":
    arguments = BENCH.parse()
    if not arguments.cpu and not torch.cuda.is_available():
        reason = f"torch {torch.__version__} sees no CUDA device" + (
            "" if torch.version.cuda else " (CPU-only)"
        )
        print(f"bench/gpu.py skipped: {reason}. It needs a CUDA GPU (bench/README.md: the lent machine).")
        skipped = {"skipped": reason, "environment": environment()}
        print("Results:", harness.write_results("gpu", skipped, arguments.out))
        sys.exit(0)
    BENCH.main(run, print_report)
