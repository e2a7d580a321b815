"""Benchmark of videos -> face crops and videos -> shards: the `ffx` CLI against the public MCX-API way.

Inputs (untimed): an FF++-style tree holding the real clips of ../shared/media/videos as originals,
plus --generated originals of the bundled portrait (ffx/synthetic.py, pasted on a panning texture at
1280x720 and 854x480 in turn), each with one fake per FF++ method (the mouth altered, pixel-aligned
with its original, so `boxes_from_original` can reuse the original's boxes); `first:N` (--frames).

Timed in alternating rounds, each in its own process as a user runs it, start-up included:
- ffx: `ffx index ffpp-c23 ...` then `ffx build ...` (all cores, --device cpu), with the recipe's
  box reuse (four-space shards), the same with `shard.stored_spaces = "rgb"`, and with
  `--set crop.boxes_from_original=false`; each stage's own seconds from BUILD/runs.jsonl. Videos ->
  crops is the wall time less the own seconds of the stages after the crops (samples, shards);
- public: bench/common/public.py over the videos (cv2 read, MTCNN(image_size=512, margin=120) on
  the full frame, a face kept above 0.99, the crops written): videos -> crops, the baseline of
  every ratio (ffx's shards hold more: the colour spaces, packed).
Ratios: wall seconds and CPU seconds (the process and its children, workers included).

Also (without --no-subsets): `extract.keep_frames=true`, the real clips alone; the median IoU of
ffx's main-face boxes against the public ones; the bytes of frames/ + faces/ against shards/.

    .venv/bin/python bench/pipeline.py --frames 30 --no-subsets   # the issue-29 figures (and 50)
"""

from __future__ import annotations

import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import FFX, MEDIA_DIR, environment, media_videos, texture_field, tree_bytes, warm_page_cache
from common.harness import Bench, Column, Part, print_comparison, print_table, process
from common.public import box_agreement, main_boxes, public_boxes, run_public

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
GENERATED_SIZES = ((1280, 720), (854, 480))
# Targets against the public way's videos -> crops: ffx's four-space shards (wall; CPU), rgb-only shards.
TARGET_SHARDS, TARGET_SHARDS_CPU, TARGET_RGB, TARGET_IOU, TARGET_INTERMEDIATES = 5.0, 4.0, 6.5, 0.9, 0.5
SHORT_FRAMES = 30  # the "30 frames per clip" figures
CYCLE_FRAMES = 150  # a generated clip's face goes round once in this many frames (6 s at 25 fps)
AFTER_CROPS = ("samples", "shards")  # the runs.jsonl stages that turn crops into shards
BENCH = Bench("pipeline", __doc__, rounds=3, max_wait=900.0)
BENCH.option("--frames", 30, "frames per clip, first:N", minimum=1)
BENCH.option(
    "--generated", 2, f"generated originals, each with a fake per method ({len(METHODS)})", minimum=0
)
BENCH.option("--no-media", False, "leave out the real clips")
BENCH.option("--no-subsets", False, "time only the whole input (no real-clips-only and 30-frames builds)")
BENCH.option("--workers", None, "ffx --workers (None: all cores)", minimum=1)


def generated_frames(frames: int, width: int, height: int, phase: float, seed: int, fake: bool):
    """The bundled portrait panning and zooming, a face about half the frame's height, pasted at a
    slowly moving place on a panning texture; `fake` alters the mouth only."""
    from ffx.synthetic import portrait_frames

    portrait_h = int(height * 0.6) // 2 * 2
    portrait_w = int(portrait_h * 0.8) // 2 * 2
    field = np.clip(
        texture_field(np.random.default_rng(seed), height + 2 * frames, width + 4 * frames), 0, 255
    )
    field = field.astype(np.uint8)
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
    """The FF++-style tree: the real clips (with `media`) and `generated` originals with their
    fakes; one row per video: path, origin, size, frames."""
    from ffx.pipeline.media.decode import probe
    from ffx.synthetic import write_h264_video

    originals = root / "original_sequences/youtube/c23/videos"
    originals.mkdir(parents=True)
    for method in METHODS:  # the recipe looks for every method's folder, even with no fakes in it
        (root / f"manipulated_sequences/{method}/c23/videos").mkdir(parents=True)
    videos, clips = [], media_videos() if media else []
    for number, clip in enumerate(clips):
        shutil.copy(clip, originals / f"{number:03d}.mp4")
        videos.append(
            {"path": f"{originals.relative_to(root)}/{number:03d}.mp4", "origin": f"media {clip.name}"}
        )
    for made in range(generated):
        target = len(clips) + 2 * made  # FF++ names a fake target_source; boxes come from the target
        width, height = GENERATED_SIZES[made % len(GENERATED_SIZES)]
        settings = {"frames": frames, "width": width, "height": height, "phase": made * 0.9, "seed": made}
        paths = {"original": originals / f"{target:03d}.mp4"}
        paths |= {
            m: root / f"manipulated_sequences/{m}/c23/videos/{target:03d}_{target + 1:03d}.mp4"
            for m in METHODS
        }
        for kind, path in paths.items():
            write_h264_video(path, generated_frames(**settings, fake=kind != "original"))
            origin = "generated original" if kind == "original" else f"generated {kind} fake"
            videos.append({"path": str(path.relative_to(root)), "origin": origin})
    for video in videos:
        info = probe(root / video["path"])
        video |= {"width": info.width, "height": info.height, "frames": info.frames}
    return videos


def time_ffx(name: str, root: Path, build: Path, frames: int, extra: list[str], workers: int | None):
    """`ffx index` then `ffx build`, each in its own process; items: frames with a main-face crop."""
    common = ["--root", str(root), "--build", str(build), "--set", f"sampling=first:{frames}", *extra]
    build_extra = ["--device", "cpu"] + (["--workers", str(workers)] if workers else [])
    commands = ([FFX, "index", "ffpp-c23", *common], [FFX, "build", "ffpp-c23", *common, *build_extra])
    timing = process(name, *commands, build=build)
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    timing.items, timing.unit = sum(row["status"] == "ok" and row["track"] == 0 for row in faces), "faces"
    stages = timing.extra["stages"]
    timing.extra |= {
        "crops_seconds": timing.seconds - sum(stages.get(stage, 0.0) for stage in AFTER_CROPS),
        "bytes_by_folder": {
            part: tree_bytes(build / part)[1] for part in ("frames", "faces", "samples", "shards")
        },
        "build": str(build),
    }
    return timing


def public_subset(public, videos: list[str], frames: int) -> dict:
    """What the public way takes for some videos and their first `frames` frames: its start-up
    plus those frames' seconds (it handles one frame at a time, so they add up)."""
    rows = [row for video in videos for row in public.extra["per_video"][video]["frames"][:frames]]
    return {"frames": len(rows), "seconds": public.startup_seconds + sum(row[1] for row in rows)}


def agreement(ffx, public) -> dict:
    """IoU of ffx's main-face boxes against the public full-resolution boxes (kept faces), fakes alone too."""
    build = Path(ffx.extra["build"])
    paths = {row["key"]: row["path"] for row in pq.read_table(build / "videos.parquet").to_pylist()}
    mine = {(paths[key], frame): box for (key, frame), box in main_boxes(build).items()}
    fakes = {key: box for key, box in mine.items() if "manipulated_sequences" in key[0]}
    reference = public_boxes(public)
    return box_agreement(mine, reference) | {
        "median_iou_fakes": box_agreement(fakes, reference)["median_iou"]
    }


def summary_rows(name: str, runs: dict, public: dict, public_cpu: float | None) -> list[dict]:
    """Each ffx run's videos -> crops and -> shards of one input against the public videos -> crops:
    wall seconds, and (whole runs only) CPU seconds."""
    rows = []
    for label, run in runs.items():
        target = {"box reuse": (TARGET_SHARDS, TARGET_SHARDS_CPU), "rgb only": (TARGET_RGB, None)}
        for output, seconds in (("crops", run.extra["crops_seconds"]), ("shards", run.seconds)):
            cpu = run.total_cpu_seconds if output == "shards" and public_cpu else None
            wall_target, cpu_target = target.get(label, (None, None)) if output == "shards" else (None, None)
            rows.append(
                {"input": name, "output": output, "ffx": label, "frames": public["frames"]}
                | {
                    "ffx_seconds": seconds,
                    "ffx_startup": run.startup_seconds,
                    "public_seconds": public["seconds"],
                }
                | {"ratio": public["seconds"] / seconds, "target": wall_target}
                | {"ffx_cpu": cpu, "public_cpu": public_cpu if cpu else None}
                | {"cpu_ratio": public_cpu / cpu if cpu else None, "cpu_target": cpu_target}
            )
    return rows


def print_report(results: dict) -> None:
    columns = [Column("video", "path"), Column("origin", "origin"), Column("frames in file", "frames")]
    print_table(f"Input mix (first:{results['arguments']['frames']} of each):", columns, results["videos"])
    print(f"public way: one process, torch {results['public_torch_threads']} threads (torch's default)")
    print_comparison(results)
    names = ("input", "output", "ffx", "frames", "ffx_seconds", "ffx_startup", "public_seconds")
    columns = [
        Column(name.replace("_seconds", " s").replace("_", " "), name, ".1f"[: 3 * ("_" in name)])
        for name in names
    ]
    columns += [
        Column("public / ffx", "ratio", ".2f"),
        Column("target", lambda row: f">= {row['target']:g}x" if row["target"] else ""),
        Column("ffx cpu s", "ffx_cpu", ".1f"),
        Column("public cpu s", "public_cpu", ".1f"),
        Column("cpu public / ffx", "cpu_ratio", ".2f"),
        Column("cpu target", lambda row: f">= {row['cpu_target']:g}x" if row["cpu_target"] else ""),
    ]
    print_table(
        "ffx's videos -> crops and -> shards against the public videos -> crops, start-up included:",
        columns,
        results["summary"],
    )
    iou, size = results["boxes"], results["storage"]
    print(
        f"\nboxes: median IoU of ffx's main-face boxes (box reuse run) against the public ones "
        f"{iou['median_iou'] or 0:.3f} (target >= {TARGET_IOU}; "
        f"fakes alone {iou['median_iou_fakes'] or 0:.3f}, "
        f"10th percentile {iou['p10_iou'] or 0:.3f}) over {iou['frames_both']} frames both found "
        f"(ffx {iou['frames_ffx']}, public {iou['frames_public']}; {iou['frames_below_0.5']} below 0.5)"
    )
    print(
        f"storage (box reuse run): frames/ + faces/ {(size['frames'] + size['faces']) / 1e6:.1f} MB = "
        f"{size['ratio'] or 0:.2f}x shards/ {size['shards'] / 1e6:.1f} MB "
        f"(target <= {TARGET_INTERMEDIATES}x); "
        f"samples/ {size['samples'] / 1e6:.1f} MB; public crops {size['public'] / 1e6:.1f} MB"
    )


def run(args, work: Path) -> dict:
    import torch

    media = not args.no_media and (MEDIA_DIR / "videos").is_dir()
    print(f"Set-up (untimed): the FF++-style trees in {work} ...", flush=True)
    root, real_root = work / "dataset", work / "real"
    videos = make_tree(root, args.frames, args.generated, media)
    if not videos:
        sys.exit("no videos: give --generated 1 or more, or have the shared media")
    real = make_tree(real_root, args.frames, 0, media) if media and not args.no_subsets else []
    warm_page_cache([root / video["path"] for video in videos])
    paths, short = [video["path"] for video in videos], min(SHORT_FRAMES, args.frames)
    spec = {
        "mode": "videos",
        "root": str(root),
        "videos": {path: [] for path in paths},
        "frames": args.frames,
    }

    def ffx(name: str, tree: Path, frames: int, extra: list[str], number: int):
        build = work / f"{name.replace(' ', '-')}-{number}"
        return time_ffx(name, tree, build, frames, extra, args.workers)

    no_reuse, keep = ["--set", "crop.boxes_from_original=false"], ["--set", "extract.keep_frames=true"]
    rgb = ["--set", 'shard.stored_spaces="rgb"']
    parts = [
        Part("public", lambda number: run_public("public", spec, work / f"public-{number}")),
        Part("ffx box reuse", partial(ffx, "ffx box reuse", root, args.frames, []), "public", "seconds"),
        Part("ffx rgb only", partial(ffx, "ffx rgb only", root, args.frames, rgb), "public", "seconds"),
        Part("ffx no reuse", partial(ffx, "ffx no reuse", root, args.frames, no_reuse), "public", "seconds"),
    ]
    if not args.no_subsets:
        parts.append(Part("ffx keep frames", partial(ffx, "ffx keep frames", root, args.frames, keep)))
        if real:
            parts.append(Part("ffx real clips", partial(ffx, "ffx real clips", real_root, args.frames, [])))
        if short < args.frames:
            parts += [
                Part(
                    f"ffx box reuse {short} frames", partial(ffx, f"ffx box reuse {short}", root, short, [])
                ),
                Part(
                    f"ffx no reuse {short} frames",
                    partial(ffx, f"ffx no reuse {short}", root, short, no_reuse),
                ),
            ]
    results = BENCH.compare(parts, args.rounds)
    by_name = results["medians"]
    public = by_name["public"]
    labels = ("box reuse", "rgb only", "no reuse")
    runs = {label: by_name[f"ffx {label}"] for label in labels}
    summary = summary_rows(
        "all clips", runs, public_subset(public, paths, args.frames), public.total_cpu_seconds
    )
    if "ffx real clips" in by_name:
        subset = public_subset(public, [video["path"] for video in real], args.frames)
        summary += summary_rows("real clips", {"originals only": by_name["ffx real clips"]}, subset, None)
    if f"ffx box reuse {short} frames" in by_name:
        runs = {label: by_name[f"ffx {label} {short} frames"] for label in ("box reuse", "no reuse")}
        summary += summary_rows(f"{short} frames per clip", runs, public_subset(public, paths, short), None)
    sizes = by_name["ffx box reuse"].extra["bytes_by_folder"]
    public_bytes = tree_bytes(work / "public-0" / "crops")[1]  # its crops only
    ratio = (sizes["frames"] + sizes["faces"]) / sizes["shards"] if sizes["shards"] else None
    return results | {
        "environment": environment(torch=torch.__version__),
        "videos": videos,
        "public_torch_threads": public.extra["torch_threads"],
        "summary": summary,
        "boxes": agreement(by_name["ffx box reuse"], public),
        "storage": sizes | {"ratio": ratio, "public": public_bytes},
    }


if __name__ == "__main__":
    BENCH.main(run, print_report)
