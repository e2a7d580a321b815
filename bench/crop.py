"""Benchmark of the `ffx crop` stage against the public MCX-API way of cropping faces.

On the real clips in ../shared/media/videos (480x480, 480x480, 640x360 and 1920x1080), each indexed
--copies times and extracted once with `ffx extract` (`first:N`, N = --frames), untimed. Timed in
alternating rounds on the same PNG frames, each in its own process as a user runs it:

- ffx: `ffx crop BUILD --device cpu` on a fresh copy of the extracted build, default workers (all
  cores); its own time is the crop stage's seconds in BUILD/runs.jsonl (worker start-up included);
- public: bench/common/public.py over the PNGs, one process on the CPU, one frame at a time at full
  resolution: `Image.open(png).convert("RGB")` then MTCNN(image_size=512, margin=120)'s forward
  pass, a face counted above probability 0.99; its own time is the frames' seconds (imports,
  building MTCNN and one warm-up call are its start-up).

The headline is faces/s on the stage's own time. Also: per clip, ffx's `crop_video` in this process
with one torch thread (what each worker does) against the public frames; a fresh worker's imports;
the IoU of ffx's main-face boxes against the public ones; box reuse on a small FF++ tree (two
originals and a generated fake of the first), `ffx crop --detect-fakes` against `--boxes-from-original`.

    .venv/bin/python bench/crop.py            # defaults: 30 frames per clip, one copy
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import pyarrow.parquet as pq
from common import FFX, MEDIA_DIR, REPO, environment, media_videos, read_video
from common.harness import Bench, Column, Part, print_comparison, print_table, process
from common.public import box_agreement, main_boxes, public_boxes, run_public

FAKE_REGION = slice(150, 330)  # the square of the face that the generated fake inverts
TARGET_RATIO, TARGET_IOU = 4.0, 0.9
BENCH = Bench("crop", __doc__, rounds=2, max_wait=900.0)
BENCH.option("--frames", 30, "frames per clip, first:N", minimum=1)
BENCH.option(
    "--copies", 1, "index each clip this many times (a larger workload, as a real dataset)", minimum=1
)
BENCH.parser.add_argument("--attempts", dest="rounds", type=int, help="the same as --rounds (its old name)")


def extracted(root: Path, build: Path, recipe: str, frames: int, *sets: str) -> Path:
    """Index `root` with `recipe` and extract first:N (untimed set-up)."""
    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.extract import run_extract
    from ffx.pipeline.stages.index import run_index

    run_index(load_manifest(recipe, {"sampling": f"first:{frames}"}, list(sets)), root, build)
    run_extract(build, show_progress=False)
    return build


def ffpp_tree(videos: Path, root: Path, frames: int) -> Path:
    """Two originals (d18, d19) and a Deepfakes fake of the first (its face region inverted)."""
    from ffx.synthetic import write_h264_video

    originals = root / "original_sequences/youtube/c23/videos"
    originals.mkdir(parents=True)
    shutil.copy(videos / "liveportrait_d18.mp4", originals / "000.mp4")
    shutil.copy(videos / "liveportrait_d19.mp4", originals / "001.mp4")
    pictures = read_video(videos / "liveportrait_d18.mp4", frames)
    for picture in pictures:
        picture[FAKE_REGION, FAKE_REGION] = 255 - picture[FAKE_REGION, FAKE_REGION]
    write_h264_video(root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4", pictures, fps=30)
    return root


def time_ffx(name: str, source: Path, build: Path, *flags: str):
    """`ffx crop` on a fresh copy of an extracted build (the copy untimed); items: main-face crops."""
    shutil.copytree(source, build)
    timing = process(name, [FFX, "crop", str(build), "--device", "cpu", *flags], build=build)
    rows = pq.read_table(build / "faces.parquet").to_pylist()
    reused = {(row["key"], row["frame_index"]) for row in rows if row["box_source"] == "original"}
    timing.items, timing.unit = sum(row["status"] == "ok" for row in rows), "faces"
    timing.extra |= {
        "build": str(build),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "reused_frames": len(reused),
        "detected_frames": len({(row["key"], row["frame_index"]) for row in rows} - reused),
    }
    return timing


def per_clip(build: Path, frames: list[dict]) -> dict[str, float]:
    """Seconds of `crop_video` per clip in this process with one torch thread, as in one worker."""
    import torch

    from ffx.pipeline.engine.builddir import BuildDir
    from ffx.pipeline.engine.currency import load_recipe
    from ffx.pipeline.stages.crop import CropStage
    from ffx.pipeline.workers.crop import CropTask, crop_video

    job = CropStage("cpu").job(load_recipe(BuildDir(build)))  # the recipe's [crop], as `ffx crop` makes it
    clips = {key: [f for f in frames if f["key"] == key] for key in dict.fromkeys(f["key"] for f in frames)}

    def task(key: str, rows: list[dict]) -> CropTask:  # "": no hash check
        return CropTask(key, tuple((row["frame_index"], row["path"], "") for row in rows), str(build), job)

    crop_video(task("warmup", frames[:1]), lambda _: None)  # loads the detector, untimed
    threads, seconds = torch.get_num_threads(), {}
    torch.set_num_threads(1)  # as each of the workers (crop_video sets it when it makes the detector)
    try:
        for key, rows in clips.items():
            start = time.perf_counter()
            crop_video(task(key, rows), lambda _: None)
            seconds[key] = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return seconds


def worker_imports() -> float:
    """Wall time of a fresh Python importing what a crop worker imports (ffx, torch, facenet)."""
    script = "import ffx.pipeline.engine.workers, ffx.pipeline.workers.crop, torch, facenet_pytorch"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
    return time.perf_counter() - start


def print_report(results: dict) -> None:
    print_comparison(results)
    ratio = results["ratios"][0]["ratio"] or 0
    print(f"ffx / public faces/s (stage's own time): {ratio:.2f}x (target >= {TARGET_RATIO:g}x)")
    columns = [
        Column("clip", "key"),
        Column("public", "public_fps", ".2f"),
        Column("ffx", "ffx_worker_fps", ".2f"),
    ]
    columns += [Column("x", "speedup", ".1f"), Column("faces pub/ffx", "faces")]
    print_table("per clip (frames/s; ffx = one worker, 1 torch thread):", columns, results["per_clip"])
    clips = results["per_clip_seconds"]
    print(
        f"  where ffx's time goes: a fresh worker's imports (ffx, torch, facenet-pytorch) take "
        f"{results['worker_import_seconds']:.2f} s alone; the crop work of all clips in one warm worker "
        f"{sum(clips.values()):.2f} s (the longest clip {max(clips.values()):.2f} s)"
    )
    box = results["boxes"]
    print(
        f"\nboxes: ffx found a main face on {box['frames_ffx']} frames, public on "
        f"{box['frames_public']}, both on {box['frames_both']}: IoU median {box['median_iou'] or 0:.3f} "
        f"(target >= {TARGET_IOU}), 10th percentile {box['p10_iou'] or 0:.3f}, min {box['min_iou'] or 0:.3f}"
    )
    if box["low_iou_frames"]:
        print(f"  frames with IoU < 0.5 (key, frame, IoU): {box['low_iou_frames']}")
    reuse = results["box_reuse"]
    print("\nbox reuse (FF++ tree: 2 originals + 1 Deepfakes fake of 000):")
    for name, run in reuse["runs"].items():
        extra = run["extra"]
        print(
            f"  {name:<21} detected {extra['detected_frames']:>3}, reused {extra['reused_frames']:>3}, "
            f"{run['seconds']:5.2f} s whole ({run['own_seconds']:.2f} s stage), statuses {extra['statuses']}"
        )
    print(f"  detections saved: {reuse['detections_saved']:.0%}")


def run(args, work: Path) -> dict:
    import torch

    from ffx.pipeline.engine.builddir import BuildDir

    clips = media_videos()
    print(f"set-up (untimed): {len(clips)} clips x{args.copies}, index + extract first:{args.frames} ...")
    root = work / "clips"
    root.mkdir()
    for clip in clips:
        for copy in range(args.copies):
            shutil.copy(
                clip, root / (clip.name if args.copies == 1 else f"{clip.stem}_copy{copy}{clip.suffix}")
            )
    source = extracted(root, work / "extracted", "folder", args.frames)
    frames = [
        row for row in pq.read_table(BuildDir(source).table("frames")).to_pylist() if row["status"] == "ok"
    ]
    keys = dict.fromkeys(f["key"] for f in frames)
    pngs = {key: [f["path"] for f in frames if f["key"] == key] for key in keys}
    indices = {key: [f["frame_index"] for f in frames if f["key"] == key] for key in keys}
    spec = {"mode": "pngs", "root": str(source), "videos": pngs, "warmup": True}
    results = BENCH.compare(
        [
            Part("ffx crop", lambda number: time_ffx("ffx crop", source, work / f"ffx-{number}"), "public"),
            Part("public", lambda number: run_public("public", spec, work / f"public-{number}", own=1)),
        ],
        args.rounds,
    )
    best, public = results["medians"]["ffx crop"], results["medians"]["public"]
    print("per clip, one worker (untimed by the rounds) ...", flush=True)
    seconds = per_clip(source, frames)
    boxes = main_boxes(Path(best.extra["build"]))
    rows = []
    for key, clip_seconds in seconds.items():
        public_rows = public.extra["per_video"][key]["frames"]
        public_seconds = sum(row[1] for row in public_rows)
        faces = f"{sum(row[4] for row in public_rows)}/{sum(k == key for k, _ in boxes)}"
        count = len(public_rows)
        fps = {"public_fps": count / public_seconds, "ffx_worker_fps": count / clip_seconds}
        rows.append(
            {"key": key, "frames": count, "faces": faces, "speedup": public_seconds / clip_seconds} | fps
        )
    print("set-up (untimed): FF++ tree + index + extract ...", flush=True)
    tree = ffpp_tree(MEDIA_DIR / "videos", work / "ffpp", args.frames)
    ffpp = extracted(tree, work / "ffpp-extracted", "ffpp-c23", args.frames, 'layout.methods=["Deepfakes"]')
    flags = {"default": "--detect-fakes", "boxes_from_original": "--boxes-from-original"}
    reuse = {
        name: time_ffx(f"reuse: {name}", ffpp, work / f"ffpp-{name}", flag) for name, flag in flags.items()
    }
    detected = [reuse[name].extra["detected_frames"] for name in flags]
    return results | {
        "environment": environment(
            torch=torch.__version__, torch_threads=torch.get_num_threads(), cv2=cv2.__version__
        ),
        "per_clip": rows,
        "per_clip_seconds": seconds,
        "worker_import_seconds": worker_imports(),
        "boxes": box_agreement(boxes, public_boxes(public, lambda video, row: indices[video][row])),
        "box_reuse": {
            "runs": {name: timing.as_dict() for name, timing in reuse.items()},
            "detections_saved": 1 - detected[1] / detected[0] if detected[0] else 0.0,
        },
    }


if __name__ == "__main__":
    if not (MEDIA_DIR / "videos").is_dir():
        print(f"no clips: {MEDIA_DIR / 'videos'} is absent; nothing to benchmark.")
        sys.exit(0)
    BENCH.main(run, print_report)
