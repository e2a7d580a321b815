"""Benchmark of videos -> face crops and videos -> shards: the `ffx` CLI against the public MCX-API way.

Inputs (made untimed, printed): an FF++-style tree (`original_sequences/youtube/c23/videos`,
`manipulated_sequences/METHOD/c23/videos`) holding the real clips of ../shared/media/videos as
originals, plus --generated originals made from the bundled portrait (ffx/synthetic.py's
`portrait_frames`, pasted on a panning texture at 1280x720 and 854x480 in turn) and, for each
generated original, one fake per FF++ method: the same frames with the mouth altered
(`alter_mouth`), pixel-aligned with their original as FF++ fakes are, so `boxes_from_original`
can reuse the original's boxes. Every video is sampled `first:N` (--frames).

Timed, each in its own process as a user runs it, start-up included:

- ffx: `ffx index ffpp-c23 --root ROOT --build BUILD --set sampling=first:N` then `ffx build
  ...` with the same options (all cores, --device cpu), once with the recipe's box reuse and once
  with `--set crop.boxes_from_original=false`; (and with `--keep-frames` when `ffx build --help`
  lists it). Each stage's own seconds come from BUILD/runs.jsonl; the rest of the wall time is the
  CLI's start-up, the index and build.json. Videos -> crops is the wall time less the own seconds
  of the stages after the crops (samples, shards);
- public: the public MCX-API code's way in one Python process (torch's default threads, printed):
  `cv2.VideoCapture.read` of every frame, BGR -> RGB, `MTCNN(image_size=512, margin=120)` on the
  full-resolution frame (its forward pass, detect + select the largest + extract and save the
  crop, called step by step so that the box is kept), a face kept above probability 0.99; for
  videos -> shards, each kept crop is then read with cv2 and converted to Lab, HSV and YCrCb with
  cv2.cvtColor, each written with cv2.imwrite (the colour-space images the public code feeds its
  model). Its start-up (Python, imports, building MTCNN) is the process's wall time less its
  per-video seconds.

Also: the same figures for the real clips alone (ffx: its own build of a tree with only them;
public: its start-up plus those videos' seconds) and for 30 frames per clip (ffx: its own builds
at first:30; public: its start-up plus each video's first 30 frames' seconds); the median IoU of
ffx's main-face boxes (faces.parquet, track 0) against the public full-resolution boxes, on the
frames both found a face, fakes with reused boxes included; the bytes of frames/ + faces/
against shards/ (and samples/).

Timed parts run in --rounds interleaved rounds, each after waiting for a quiet machine (no pytest
or other bench/ script running, for at most --max-wait seconds); the median run of each part is
reported. Run from the repository root:

    .venv/bin/python bench/pipeline.py            # defaults: 60 frames per clip, 2 generated originals
    .venv/bin/python bench/pipeline.py --help

The figures are printed and written to bench/results/pipeline-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Only the standard library at the top: the public worker (`--public-worker`) is timed from its
# start, and must import what the public code imports, nothing more.

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
GENERATED_SIZES = ((1280, 720), (854, 480))
TARGET_REUSE, TARGET_NO_REUSE, TARGET_IOU, TARGET_INTERMEDIATES = 6.0, 3.0, 0.9, 0.5
SHORT_FRAMES = 30  # the "30 frames per clip" figures
CYCLE_FRAMES = 150  # a generated clip's face goes round once in this many frames (6 s at 25 fps)
AFTER_CROPS = ("samples", "shards")  # the runs.jsonl stages that turn crops into shards
SPACES_PUBLIC = (("lab", 44), ("hsv", 40), ("ycrcb", 36))  # cv2.COLOR_RGB2Lab, RGB2HSV, RGB2YCrCb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from common import add_max_wait_option, add_workdir_options

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--frames", type=int, default=60, help="frames per clip, first:N (default: 60)")
    parser.add_argument(
        "--generated",
        type=int,
        default=2,
        help=f"generated originals, each with a fake per method ({len(METHODS)}) (default: 2)",
    )
    parser.add_argument("--no-media", action="store_true", help="leave out the real clips")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the timed parts; medians (default: 3)"
    )
    parser.add_argument(
        "--no-subsets",
        action="store_true",
        help="time only the whole input (no real-clips-only and 30-frames builds)",
    )
    parser.add_argument("--workers", type=int, default=None, help="ffx --workers (default: all cores)")
    add_workdir_options(parser, "the clips and builds")
    add_max_wait_option(parser, default=900.0)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.generated < 0 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1, --generated at least 0")
    return args


# ---------------------------------------------------------------------------------------------
# Inputs (not timed)


def generated_frames(frames: int, width: int, height: int, phase: float, seed: int, fake: bool):
    """The bundled portrait panning and zooming (portrait_frames), a face about half the frame's
    height, pasted at a slowly moving place on a panning texture; `fake` alters the mouth only."""
    import numpy as np
    from common import texture_field

    from ffx.synthetic import portrait_frames

    portrait_h = int(height * 0.6) // 2 * 2
    portrait_w = int(portrait_h * 0.8) // 2 * 2
    rng = np.random.default_rng(seed)
    field = np.clip(texture_field(rng, height + 2 * frames, width + 4 * frames), 0, 255).astype(np.uint8)
    # The motion's period does not depend on the clip's length, so a short clip moves as slowly
    # as a long one (a face that jumps across the frame would make a new track each frame).
    period = max(frames, CYCLE_FRAMES)
    faces = portrait_frames(period, phase, fake, width=portrait_w, height=portrait_h)
    for index, face in zip(range(frames), faces):
        picture = field[2 * index : 2 * index + height, 4 * index : 4 * index + width].copy()
        angle = 2 * np.pi * index / period + phase
        left = int((width - portrait_w) * (0.5 + 0.3 * np.cos(angle)))
        top = int((height - portrait_h) * (0.5 + 0.3 * np.sin(angle)))
        picture[top : top + portrait_h, left : left + portrait_w] = face
        yield picture


def make_tree(root: Path, frames: int, generated: int, media: bool) -> list[dict]:
    """The FF++-style tree under `root`: the real clips (with `media`) and `generated` originals
    with their fakes, `frames` frames each; one row per video: path, origin, size, frames."""
    from common import media_videos

    from ffx.pipeline.media.decode import probe
    from ffx.synthetic import write_h264_video

    originals = root / "original_sequences/youtube/c23/videos"
    originals.mkdir(parents=True)
    for method in METHODS:  # the recipe looks for every method's folder, even with no fakes in it
        (root / f"manipulated_sequences/{method}/c23/videos").mkdir(parents=True)
    videos = []
    number = 0
    for clip in media_videos() if media else []:
        shutil.copy(clip, originals / f"{number:03d}.mp4")
        videos.append(
            {"path": f"{originals.relative_to(root)}/{number:03d}.mp4", "origin": f"media {clip.name}"}
        )
        number += 1
    for number_generated in range(generated):
        width, height = GENERATED_SIZES[number_generated % len(GENERATED_SIZES)]
        target, source = number, number + 1  # FF++ names a fake target_source; boxes come from the target
        settings = {"frames": frames, "width": width, "height": height, "phase": number_generated * 0.9}
        path = originals / f"{target:03d}.mp4"
        write_h264_video(path, generated_frames(**settings, seed=number_generated, fake=False))
        videos.append({"path": str(path.relative_to(root)), "origin": "generated original"})
        for method in METHODS:
            path = root / f"manipulated_sequences/{method}/c23/videos/{target:03d}_{source:03d}.mp4"
            write_h264_video(path, generated_frames(**settings, seed=number_generated, fake=True))
            videos.append({"path": str(path.relative_to(root)), "origin": f"generated {method} fake"})
        number += 2
    for video in videos:
        info = probe(root / video["path"])
        video |= {"width": info.width, "height": info.height, "frames": info.frames}
    return videos


# ---------------------------------------------------------------------------------------------
# ffx, as a user runs it


def ffx_command() -> list[str]:
    """The `ffx` entry point beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "ffx"
    return [str(beside)] if beside.is_file() else ["ffx"]


def build_options() -> set[str]:
    """The options `ffx build --help` lists (e.g. whether --keep-frames exists yet)."""
    result = subprocess.run([*ffx_command(), "build", "--help"], capture_output=True, text=True, check=False)
    return {word.strip("│,") for word in result.stdout.split() if word.startswith("--")}


def stage_seconds(build: Path) -> dict[str, float]:
    """Own seconds per stage over every run and part logged in BUILD/runs.jsonl."""
    totals: dict[str, float] = {}
    log = build / "runs.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        run = json.loads(line)
        totals[run["stage"]] = round(totals.get(run["stage"], 0.0) + run["seconds"], 3)
    return totals


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def time_ffx(name: str, root: Path, build: Path, frames: int, extra: list[str], workers: int | None):
    """`ffx index` then `ffx build` in subprocesses; the Timing (items: frames with a main-face
    crop; extra: the stages' own seconds, videos -> crops seconds, folder bytes, statuses)."""
    import pyarrow.parquet as pq
    from common import Stopwatch

    common = ["--root", str(root), "--build", str(build), "--set", f"sampling=first:{frames}", *extra]
    build_extra = ["--device", "cpu"] + (["--workers", str(workers)] if workers else [])
    stopwatch = Stopwatch()
    for command in (["index", "ffpp-c23", *common], ["build", "ffpp-c23", *common, *build_extra]):
        result = subprocess.run([*ffx_command(), *command], capture_output=True, text=True, check=False)
        if result.returncode:
            sys.exit(f"ffx {command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    stopwatch.stop()
    stages = stage_seconds(build)
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    ok = [row for row in faces if row["status"] == "ok" and row["track"] == 0]
    statuses: dict[str, int] = {}
    for row in faces:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    sizes = {part: folder_bytes(build / part) for part in ("frames", "faces", "samples", "shards")}
    stage_total = sum(stages.values())
    return stopwatch.timing(
        name,
        len(ok),
        "faces",
        startup_seconds=max(0.0, stopwatch.seconds() - stage_total),
        stages=stages,
        crops_seconds=stopwatch.seconds() - sum(stages.get(stage, 0.0) for stage in AFTER_CROPS),
        bytes_by_folder=sizes,
        face_statuses=statuses,
        box_sources=_count(row.get("box_source", "") for row in ok),
        build=str(build),
    )


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def ffx_boxes(build: Path) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """ffx's main-face box per (video path, frame index): faces.parquet joined with videos.parquet."""
    import pyarrow.parquet as pq

    paths = {row["key"]: row["path"] for row in pq.read_table(build / "videos.parquet").to_pylist()}
    return {
        (paths[row["key"]], row["frame_index"]): (row["x1"], row["y1"], row["x2"], row["y2"])
        for row in pq.read_table(build / "faces.parquet").to_pylist()
        if row["status"] == "ok" and row["track"] == 0
    }


# ---------------------------------------------------------------------------------------------
# The public way, in its own process


def public_worker(spec_path: Path) -> None:
    """The public MCX-API way over the spec's videos; per-video seconds, probabilities and boxes
    written to the spec's `out` JSON. Imports only what the public code imports."""
    started = time.perf_counter()
    import cv2
    import torch
    from facenet_pytorch import MTCNN
    from PIL import Image

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    mtcnn = MTCNN(image_size=spec["size"], margin=spec["margin"], device="cpu")
    ready = time.perf_counter()
    out_dir, root = Path(spec["crops"]), Path(spec["root"])
    report = {"torch_threads": torch.get_num_threads(), "startup_inside": ready - started, "videos": {}}
    for video in spec["videos"]:
        frames = []
        shard_seconds = 0.0
        begun = time.perf_counter()
        capture = cv2.VideoCapture(str(root / video))
        for index in range(spec["frames"]):
            frame_start = time.perf_counter()
            ok, bgr = capture.read()
            if not ok:
                break
            img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            save = out_dir / video.replace("/", "_") / f"{index:04d}.png"
            save.parent.mkdir(parents=True, exist_ok=True)
            # MTCNN.forward step by step (the same calls), keeping the box for the comparison.
            boxes, probs, points = mtcnn.detect(img, landmarks=True)
            boxes, probs, points = mtcnn.select_boxes(
                boxes, probs, points, img, method=mtcnn.selection_method
            )
            mtcnn.extract(img, boxes, str(save))
            prob = None if probs is None else float(probs)  # one image: one box (1 x 4) and its prob
            kept = prob is not None and prob > spec["min_prob"]
            crop_end = time.perf_counter()
            if kept:  # the colour-space images of the kept crop
                rgb = cv2.cvtColor(cv2.imread(str(save)), cv2.COLOR_BGR2RGB)
                for space, code in spec["spaces"]:
                    cv2.imwrite(str(save.with_name(f"{save.stem}.{space}.png")), cv2.cvtColor(rgb, code))
            shard_seconds += time.perf_counter() - crop_end
            box = None if boxes is None else [float(value) for value in boxes[0]]
            frames.append([index, crop_end - frame_start, time.perf_counter() - frame_start, prob, kept, box])
        capture.release()
        report["videos"][video] = {
            "seconds": time.perf_counter() - begun,
            "shard_seconds": shard_seconds,
            "frames": frames,  # [index, crop seconds, crop + colour seconds, prob, kept, box]
        }
    Path(spec["out"]).write_text(json.dumps(report), encoding="utf-8")


def time_public(name: str, root: Path, videos: list[str], frames: int, work: Path):
    """The public worker in a fresh Python; its Timing (items: kept faces; extra: per video)."""
    from common import Stopwatch
    from crop import PUBLIC_MARGIN, PUBLIC_MIN_PROB, PUBLIC_SIZE

    work.mkdir(parents=True)
    spec = {
        "root": str(root),
        "videos": videos,
        "frames": frames,
        "size": PUBLIC_SIZE,
        "margin": PUBLIC_MARGIN,
        "min_prob": PUBLIC_MIN_PROB,
        "spaces": [list(pair) for pair in SPACES_PUBLIC],
        "crops": str(work / "crops"),
        "out": str(work / "public.json"),
    }
    (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    stopwatch = Stopwatch()
    subprocess.run([sys.executable, __file__, "--public-worker", str(work / "spec.json")], check=True)
    stopwatch.stop()
    report = json.loads((work / "public.json").read_text(encoding="utf-8"))
    per_video = report.pop("videos")
    loop = sum(video["seconds"] for video in per_video.values())
    kept = sum(frame[4] for video in per_video.values() for frame in video["frames"])
    return stopwatch.timing(
        name,
        kept,
        "faces",
        startup_seconds=max(0.0, stopwatch.seconds() - loop),
        per_video=per_video,
        bytes_by_folder={"crops": folder_bytes(work / "crops")},
        **report,
    )


def public_subset(public, videos: list[str], frames: int) -> dict:
    """What the public way takes for some videos and their first `frames` frames: its start-up
    plus those frames' seconds (it handles one frame at a time, so they add up)."""
    per_video = public.extra["per_video"]
    rows = [frame for video in videos for frame in per_video[video]["frames"][:frames]]
    crops = sum(row[1] for row in rows)
    shards = sum(row[2] for row in rows)
    return {
        "frames": len(rows),
        "faces": sum(row[4] for row in rows),
        "crops_seconds": public.startup_seconds + crops,
        "shards_seconds": public.startup_seconds + shards,
    }


# ---------------------------------------------------------------------------------------------
# Comparison and report


def agreement(ffx, public) -> dict:
    """IoU of ffx's main-face boxes against the public full-resolution boxes (kept faces)."""
    import numpy as np

    from ffx.pipeline.media.faces import box_iou

    reference = {
        (video, frame[0]): frame[5]
        for video, data in public.extra["per_video"].items()
        for frame in data["frames"]
        if frame[4]
    }
    mine = ffx_boxes(Path(ffx.extra["build"]))
    both = sorted(set(mine) & set(reference))
    overlaps = np.array([box_iou(mine[key], reference[key]) for key in both])
    fakes = np.array([iou for key, iou in zip(both, overlaps) if "manipulated_sequences" in key[0]])
    return {
        "frames_ffx": len(mine),
        "frames_public": len(reference),
        "frames_both": len(both),
        "median_iou": float(np.median(overlaps)) if len(both) else None,
        "p10_iou": float(np.percentile(overlaps, 10)) if len(both) else None,
        "median_iou_fakes": float(np.median(fakes)) if len(fakes) else None,
        "frames_below_0.5": int((overlaps < 0.5).sum()),
    }


def summary_rows(name: str, ffx_reuse, ffx_plain, public: dict, frames: int) -> list[dict]:
    """The report's rows for one input: videos -> crops and videos -> shards, each ffx run
    against the public way."""
    rows = []
    labels = ("box reuse", "no reuse") if ffx_plain is not None else ("originals only", "")
    for label, run in zip(labels, (ffx_reuse, ffx_plain)):
        if run is None:
            continue
        for output, ffx_seconds, public_seconds in (
            ("crops", run.extra["crops_seconds"], public["crops_seconds"]),
            ("shards", run.seconds, public["shards_seconds"]),
        ):
            rows.append(
                {
                    "input": name,
                    "output": output,
                    "ffx": label,
                    "frames": frames,
                    "ffx_seconds": ffx_seconds,
                    "ffx_startup": run.startup_seconds,
                    "public_seconds": public_seconds,
                    "ratio": public_seconds / ffx_seconds if ffx_seconds else None,
                    "target": TARGET_NO_REUSE if label == "no reuse" else TARGET_REUSE,
                }
            )
    return rows


def print_report(results: dict) -> None:
    from common import Column, print_environment, print_machine_load, print_table, print_timings

    print_environment(results["environment"])
    print(
        f"public way: one process, torch {results['public_torch_threads']} threads (torch's default), "
        f"MTCNN(image_size=512, margin=120) on every full-resolution frame"
    )
    columns = [
        Column("video", "path"),
        Column("origin", "origin"),
        Column("size", lambda row: f"{row['width']}x{row['height']}"),
        Column("frames in file", "frames"),
    ]
    print_table(f"Input mix (first:{results['arguments']['frames']} of each):", columns, results["videos"])
    print_timings(
        "Timed runs (median of the rounds; start-up: ffx's CLI, index and build.json; the public "
        "process's imports and MTCNN):",
        results["timings"],
        rate="faces/s",
        startup=True,
    )
    for timing in results["timings"]:
        if "stages" in timing["extra"]:
            stages = ", ".join(
                f"{stage} {seconds:.1f} s" for stage, seconds in timing["extra"]["stages"].items()
            )
            print(f"  {timing['name']}: stages' own seconds (runs.jsonl): {stages}")
    columns = [
        Column("input", "input"),
        Column("output", "output"),
        Column("ffx", "ffx"),
        Column("frames", "frames"),
        Column("ffx s", "ffx_seconds", ".1f"),
        Column("ffx start-up s", "ffx_startup", ".1f"),
        Column("public s", "public_seconds", ".1f"),
        Column("public / ffx", "ratio", ".2f"),
        Column("target", lambda row: f">= {row['target']:g}x"),
    ]
    print_table("Videos -> crops and videos -> shards, start-up included:", columns, results["summary"])
    iou = results["boxes"]
    print(
        f"\nboxes: median IoU of ffx's main-face boxes (box reuse run) against the public "
        f"full-resolution ones {_fmt(iou['median_iou'])} (target >= {TARGET_IOU}; fakes alone "
        f"{_fmt(iou['median_iou_fakes'])}, "
        f"10th percentile {_fmt(iou['p10_iou'])}) over {iou['frames_both']} frames both found "
        f"(ffx {iou['frames_ffx']}, public {iou['frames_public']}; {iou['frames_below_0.5']} below 0.5)"
    )
    storage = results["storage"]
    print(
        f"storage (box reuse run): frames/ {storage['frames'] / 1e6:.1f} MB + faces/ "
        f"{storage['faces'] / 1e6:.1f} MB = {storage['ratio']:.2f}x shards/ {storage['shards'] / 1e6:.1f} MB "
        f"(target <= {TARGET_INTERMEDIATES}x); "
        f"samples/ {storage['samples'] / 1e6:.1f} MB; public crops + colour images "
        f"{storage['public'] / 1e6:.1f} MB"
    )
    if results["keep_frames"] is None:
        print("(`ffx build --help` lists no --keep-frames: that variant was not run)")
    print_machine_load(results["all_timings"], results["waits"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict:
    from functools import partial

    from common import MEDIA_DIR, Quiet, environment, interleaved, median_run, warm_page_cache

    media = not args.no_media and (MEDIA_DIR / "videos").is_dir()
    print(f"Set-up (untimed): the FF++-style trees in {work} ...", flush=True)
    root = work / "dataset"
    videos = make_tree(root, args.frames, args.generated, media)
    if not videos:
        sys.exit("no videos: give --generated 1 or more, or have the shared media")
    real_root = work / "real"
    real_videos = make_tree(real_root, args.frames, 0, media) if media and not args.no_subsets else []
    warm_page_cache([root / video["path"] for video in videos])
    # Given to `ffx index` and `ffx build` alike: the recipe field, not build's flag.
    keep_frames = ["--set", "extract.keep_frames=true"] if "--keep-frames" in build_options() else None
    no_reuse = ["--set", "crop.boxes_from_original=false"]

    def ffx_part(name: str, tree: Path, frames: int, extra: list[str], number: int):
        return time_ffx(name, tree, work / f"{name.replace(' ', '-')}-{number}", frames, extra, args.workers)

    paths = [video["path"] for video in videos]
    parts = [
        ("public", lambda number: time_public("public", root, paths, args.frames, work / f"public-{number}")),
        ("ffx box reuse", partial(ffx_part, "ffx box reuse", root, args.frames, [])),
        ("ffx no reuse", partial(ffx_part, "ffx no reuse", root, args.frames, no_reuse)),
    ]
    if keep_frames:
        parts.append(
            ("ffx keep frames", partial(ffx_part, "ffx keep frames", root, args.frames, keep_frames))
        )
    if not args.no_subsets:
        if real_videos:
            parts.append(("ffx real clips", partial(ffx_part, "ffx real clips", real_root, args.frames, [])))
        short = min(SHORT_FRAMES, args.frames)
        parts.append(
            (f"ffx box reuse {short} frames", partial(ffx_part, f"ffx box reuse {short}", root, short, []))
        )
        parts.append(
            (
                f"ffx no reuse {short} frames",
                partial(ffx_part, f"ffx no reuse {short}", root, short, no_reuse),
            )
        )
    quiet = Quiet(args.max_wait)
    best, all_runs = interleaved(args.rounds, parts, quiet, pick=median_run)
    by_name = dict(zip((label for label, _part in parts), best))
    public = by_name["public"]

    frames_all = sum(len(data["frames"]) for data in public.extra["per_video"].values())
    summary = summary_rows(
        "all clips",
        by_name["ffx box reuse"],
        by_name["ffx no reuse"],
        public_subset(public, paths, args.frames),
        frames_all,
    )
    if "ffx real clips" in by_name:
        real_paths = [video["path"] for video in real_videos]
        subset = public_subset(public, real_paths, args.frames)
        summary += summary_rows("real clips", by_name["ffx real clips"], None, subset, subset["frames"])
    if not args.no_subsets:
        short = min(SHORT_FRAMES, args.frames)
        subset = public_subset(public, paths, short)
        summary += summary_rows(
            f"{short} frames per clip",
            by_name[f"ffx box reuse {short} frames"],
            by_name[f"ffx no reuse {short} frames"],
            subset,
            subset["frames"],
        )
    sizes = by_name["ffx box reuse"].extra["bytes_by_folder"]
    intermediates = sizes["frames"] + sizes["faces"]
    import torch

    return {
        "environment": environment(torch=torch.__version__),
        "arguments": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "videos": videos,
        "public_torch_threads": public.extra["torch_threads"],
        "keep_frames": keep_frames,
        "timings": [timing.as_dict() for timing in best],
        "all_timings": [timing.as_dict() for timing in all_runs],
        "summary": summary,
        "boxes": agreement(by_name["ffx box reuse"], public),
        "storage": {
            **sizes,
            "ratio": intermediates / sizes["shards"] if sizes["shards"] else None,
            "public": public.extra["bytes_by_folder"]["crops"],
        },
        "waits": quiet.waits,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--public-worker"]:
        public_worker(Path(argv[1]))
        return
    from common import run_and_report

    args = parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_and_report("pipeline", args, run, print_report)


if __name__ == "__main__":
    main()
