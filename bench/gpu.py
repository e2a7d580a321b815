"""GPU benchmark, made to run as it is on a lent CUDA machine in under 5 minutes; on a machine
without CUDA it says why and stops (exit 0), writing that reason to its JSON.

Parts, each timed between torch.cuda.synchronize() calls:

- detection: ffx's batched MTCNN (`FaceDetector.detect_video`, the crop stage's detector) on CUDA
  over the first --frames frames of each real clip, for each batch size of --batch-sizes, with
  frames downscaled to a 640-pixel longest side (the recipes' crop.detect_max_side) and at full
  resolution; frames/s, and the median IoU of the main (largest) box at 640 against full resolution;
- train step: `TrainStep(MCXAPI(legacy_xception, rgb+lab+hsv+ycbcr))` at 448x448 (3 classes x 9
  images, the paper's batch), bf16 autocast, channels-last, eager and with torch.compile (as
  `ffx train --compile` wraps it), as bench/train.py times it; samples/s after warm-up steps (the
  start-up, compiling included);
- loader: `ffx train`'s loader (`epoch_batches`, --workers processes) to the GPU over shards
  built from the real clips' frames (bench/train.py's generated build), samples/s against the step's;
- build: `python -m ffx.cli build folder --root MEDIA --build B --device cuda` of the real clips,
  as a user runs it: wall seconds and each stage's own seconds (BUILD/runs.jsonl).

Run from the repository root (bench/README.md says how to ship it to a lent machine):

    python bench/gpu.py --out DIR          # the JSON goes to DIR (default: bench/results/)
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    MEDIA_DIR,
    REPO,
    RESULTS_DIR,
    Column,
    Quiet,
    Stopwatch,
    environment,
    print_environment,
    print_table,
    print_timings,
    write_results,
)

PACKED_MEDIA = (
    Path(__file__).resolve().parent / "results" / "gpu-pack" / "media"
)  # gpu_pack.sh puts them here
FULL_SIDE = 1 << 16  # a detect_max_side no frame reaches: full resolution


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for the JSON (default: bench/results)"
    )
    parser.add_argument(
        "--media",
        type=Path,
        default=None,
        help=f"folder of the real clips (default: {MEDIA_DIR / 'videos'}, else {PACKED_MEDIA})",
    )
    parser.add_argument("--frames", type=int, default=64, help="frames per clip for detection (default: 64)")
    parser.add_argument(
        "--batch-sizes",
        default="1,8,32,64",
        help="detection batch sizes, comma-separated (default: 1,8,32,64)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed train steps (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: 3)")
    parser.add_argument("--workers", type=int, default=8, help="loader worker processes (default: 8)")
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed (default: 40)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile step")
    parser.add_argument("--no-build", action="store_true", help="leave out the end-to-end build")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="work dir, kept (default: a temp dir, removed at the end)"
    )
    parser.add_argument(
        "--step-batch", type=int, default=27, help="train step batch, the paper's 3 x 9 (default: 27)"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="run every part on the CPU instead (use small options): checks the procedure on a "
        "machine without CUDA; the figures mean nothing",
    )
    args = parser.parse_args(argv)
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    if min(args.frames, args.steps, args.batches, args.step_batch, *args.batch_sizes) < 1 or args.warmup < 0:
        parser.error("--frames, --steps, --batches and the batch sizes must be >= 1, --warmup >= 0")
    return args


def media_folder(args: argparse.Namespace) -> Path | None:
    for folder in (args.media, MEDIA_DIR / "videos", PACKED_MEDIA):
        if folder is not None and any(Path(folder).glob("*.mp4")):
            return Path(folder)
    return None


def cuda_missing() -> str | None:
    """Why the GPU parts cannot run here, or None."""
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return f"torch {torch.__version__} sees no CUDA device" + ("" if built else " (a CPU-only build)")
    return None


# ---------------------------------------------------------------------------------------------
# Detection


def main_box(detections) -> np.ndarray | None:
    """The largest box of a frame's detections."""
    if not detections:
        return None
    return max((d.box for d in detections), key=lambda box: (box[2] - box[0]) * (box[3] - box[1]))


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_detection(
    clips: dict[str, list[np.ndarray]], batch_sizes: list[int], device: str
) -> tuple[list, list]:
    """Frames/s of FaceDetector on CUDA per (side, batch size); IoU of 640 against full resolution."""
    from ffx.pipeline.media.detect import DetectorSettings, FaceDetector
    from ffx.pipeline.media.faces import box_iou

    timings, boxes = [], {}
    for side, label in ((640, "640"), (FULL_SIDE, "full")):
        for batch_size in batch_sizes:
            detector = FaceDetector(DetectorSettings(side, 0.5), device=device, batch_size=batch_size)
            detector.detect_video(next(iter(clips.values()))[: batch_size + 1])  # warm-up (cuDNN, allocator)
            synchronize(device)
            stopwatch = Stopwatch()
            found = {name: detector.detect_video(frames) for name, frames in clips.items()}
            synchronize(device)
            frames = sum(len(frames) for frames in clips.values())
            timings.append(
                stopwatch.timing(
                    f"MTCNN {label}, batch {batch_size}", frames, "frames", side=label, batch_size=batch_size
                )
            )
            boxes[(label, batch_size)] = found
            print(f"  {timings[-1].name}: {timings[-1].rate:.1f} frames/s", flush=True)
    rows = []
    for batch_size in batch_sizes:
        small, full = boxes[("640", batch_size)], boxes[("full", batch_size)]
        for name in clips:
            overlaps = [
                box_iou(a, b)
                for a, b in ((main_box(s), main_box(f)) for s, f in zip(small[name], full[name]))
                if a is not None and b is not None
            ]
            rows.append(
                {
                    "clip": name,
                    "batch_size": batch_size,
                    "frames": len(clips[name]),
                    "frames_both": len(overlaps),
                    "median_iou": float(np.median(overlaps)) if overlaps else None,
                }
            )
    return timings, rows


# ---------------------------------------------------------------------------------------------
# Train step and loader


def time_training(
    args: argparse.Namespace, work: Path, quiet: Quiet, device: str, clips: list[Path]
) -> tuple[list, list, dict]:
    """The loader to the GPU and legacy_xception's step, eager and compiled (bench/train.py's parts)."""
    from dataclasses import replace

    import train

    from ffx.model.checkpoint import place
    from ffx.train.config import make_config
    from ffx.train.stream import check_shards

    settings = train.parse_args(["--videos-per-label", "30", "--frames", "8"])  # its build: 2 classes
    shards, inputs = train.make_shards(work, settings, clips)
    config = make_config(
        shards=str(shards),
        run=str(work / "run"),
        backbone="legacy_xception",
        crop=448,
        classes_per_batch=2,
        images_per_class=9,
        workers=args.workers,
        spaces=train.SPACE_SETS[0],
        channels_last=True,
    )
    classes, rarest = check_shards(config)
    config = replace(config, steps_per_epoch=max(1, rarest * classes // 18))
    gpu = place(device)
    loader, batch = train.time_loader(config, gpu, args.batches, quiet)
    print(f"  {loader.name}: {loader.rate:.1f} samples/s", flush=True)
    # The paper's batch, 3 classes x 9 images: the loader's first batch repeated to 27 samples.
    size = args.step_batch
    images = batch["image"].repeat(-(-size // len(batch["image"])), 1, 1, 1)[:size]
    batch27 = {"image": images, "label": torch.arange(size) % 3}
    steps = []
    for compiled in (False, True) if not args.no_compile else (False,):
        step_config = replace(config, compile=compiled)
        steps += train.time_steps(
            step_config, 3, batch27, gpu, torch.bfloat16, args.warmup, args.steps, quiet, states=(False,)
        )
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return [loader], steps, inputs


# ---------------------------------------------------------------------------------------------
# End-to-end build


def time_build(media: Path, work: Path, device: str, sampling: str | None) -> tuple[object, dict]:
    """`python -m ffx.cli build folder` of the real clips on `device`, as a user runs it."""
    build = work / "media-build"
    stopwatch = Stopwatch()
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
        "--device",
        device,
        *(["--set", f"sampling={sampling}"] if sampling else []),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    stopwatch.stop()
    if result.returncode:
        return None, {"error": result.stderr.strip()[-2000:], "returncode": result.returncode}
    stages: dict[str, float] = {}
    for line in (build / "runs.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        stages[entry["stage"]] = stages.get(entry["stage"], 0.0) + entry["seconds"]
    import pyarrow.parquet as pq

    faces = pq.read_table(build / "faces.parquet").to_pylist()
    ok = sum(row["status"] == "ok" for row in faces)
    timing = stopwatch.timing(
        f"ffx build folder (media clips, {device})",
        ok,
        "faces",
        startup_seconds=max(0.0, stopwatch.seconds() - sum(stages.values())),
        stages=stages,
    )
    return timing, {"stages": stages}


# ---------------------------------------------------------------------------------------------


def print_report(results: dict) -> None:
    print_environment(results["environment"])
    print_timings("Detection (ffx FaceDetector on CUDA):", results["detection"], rate="frames/s")
    print_table(
        "Main box at 640 against full resolution:",
        [
            Column("clip", "clip"),
            Column("batch", "batch_size"),
            Column("frames", "frames"),
            Column("both found", "frames_both"),
            Column("median IoU", "median_iou", ".3f"),
        ],
        results["detection_iou"],
    )
    print_timings(
        "Loader to the GPU and train steps (start-up: first batch; warm-up steps):",
        results["loader"] + results["steps"],
        rate="samples/s",
        startup=True,
    )
    for ratio in results["ratios"]:
        print(f"  loader / {ratio['step']}: {ratio['ratio']:.2f}x (the loader keeps up when > 1)")
    if results["build"]:
        print_timings("End-to-end build:", [results["build"]], rate="faces/s", startup=True)
        stages = ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in results["build"]["extra"]["stages"].items()
        )
        print(f"  stages' own seconds: {stages}")
    elif results.get("build_error"):
        print(f"build failed: {results['build_error']}")
    print(f"total {results['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    import tempfile

    env = environment(torch=torch.__version__, cuda=torch.version.cuda)
    reason = None if args.cpu else cuda_missing()
    device = "cpu" if args.cpu else "cuda"
    if reason:
        print(f"bench/gpu.py skipped: {reason}. It needs a CUDA GPU (bench/README.md: the lent machine).")
        path = write_results("gpu", {"skipped": reason, "environment": env}, args.out)
        print(f"Results: {path}")
        return 0
    env["gpu"] = torch.cuda.get_device_name() if device == "cuda" else None
    media = media_folder(args)
    if media is None:
        sys.exit(f"no clips: give --media DIR, or run bench/gpu_pack.py to pack them into {PACKED_MEDIA}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ffx-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        quiet = Quiet(0.0)  # a lent machine runs nothing else; the waits are recorded all the same
        import train
        from crop import read_video  # OpenCV's decode: on every machine

        results: dict = {
            "environment": env,
            "arguments": {
                key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
            },
            "media": sorted(path.name for path in media.glob("*.mp4")),
        }
        path = write_results("gpu", results, args.out)

        def save(**figures) -> None:
            """Add figures and rewrite the JSON, so that a run stopped later keeps what it measured."""
            results.update(figures, seconds=time.perf_counter() - started)
            path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

        clips = {video.stem: read_video(video, args.frames) for video in sorted(media.glob("*.mp4"))}
        print(f"Detection on {sum(map(len, clips.values()))} frames of {len(clips)} clips ...", flush=True)
        detection, iou_rows = time_detection(clips, args.batch_sizes, device)
        save(detection=[timing.as_dict() for timing in detection], detection_iou=iou_rows)
        print("Loader and train steps ...", flush=True)
        loaders, steps, inputs = time_training(args, work, quiet, device, sorted(media.glob("*.mp4")))
        save(
            train_inputs=inputs,
            loader=[timing.as_dict() for timing in loaders],
            steps=[timing.as_dict() for timing in steps],
            ratios=train.ratios(loaders, steps),
        )
        sampling = f"first:{args.frames}" if args.cpu else None  # on the CPU only a check: few frames
        build, build_info = (None, {}) if args.no_build else time_build(media, work, device, sampling)
        save(build=build.as_dict() if build else None, build_error=build_info.get("error"))
    finally:
        if args.workdir is None:  # the temp dir: generated build, shards, media build
            shutil.rmtree(work, ignore_errors=True)
    print_report(results)
    print(f"\nResults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
