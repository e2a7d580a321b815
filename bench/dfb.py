"""Benchmark of videos -> face crops with landmarks: `ffx build --set 'crop.landmarks="dlib68"'`
against DeepfakeBench's preprocessing (dlib's frontal detector and shape predictor on every sampled
frame, an aligned crop, saved with its landmarks).

Inputs (untimed): bench/pipeline.py's FF++-style tree (`make_tree`): the real clips of
../shared/media/videos as originals (105 to 275 frames each), plus --generated originals of the
bundled portrait with one fake per FF++ method, each --frames long.

Both sides take the same frames, DeepfakeBench's rule over the whole video:
`np.linspace(0, n - 1, N, dtype=int)` of the frame count n, N = --frames (on a generated clip,
which is N frames long, every frame). Timed in alternating rounds, each in its own process as a
user runs it, start-up included:
- dfb: bench/common/dfb_public.py, DeepfakeBench's `preprocess.py` written from its description
  (its docstring says what it does and where it differs: the 68-point model, as the 81-point one
  is not available offline): one process, videos on a thread pool of os.cpu_count() workers as the
  script has it (--dfb-threads 1: one after the other), every frame decoded, dlib single-threaded;
  it writes crops and landmarks, no shards;
- ffx: `ffx index ffpp-c23 ...` then `ffx build ffpp-c23 ... --set 'crop.landmarks="dlib68"'
  --set sampling=dfb-linspace:N` (all cores, --device cpu; the recipe's box reuse and four-space
  shards): videos -> shards is the whole wall time, videos -> crops the wall time less the own
  seconds of the stages after the crops (samples, shards) from BUILD/runs.jsonl, as in pipeline.py.
Ratios dfb / ffx: wall seconds for crops and for shards (target >= 5x), CPU seconds (process and
children) for shards (ffx's CPU per stage is not logged). Where the time goes: ffx's stages, and
dfb's summed seconds of decode, detect, landmarks, align, the second detect + landmarks on the
crop, save and model loading (per-thread wall seconds: with threads they add up to more than the
wall time, so their shares are what to read).

    .venv/bin/python bench/dfb.py --frames 30 --max-wait 900   # the issue-29 item-5 figure
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from common import FFX, MEDIA_DIR, environment, warm_page_cache
from common.harness import Bench, Column, Part, print_comparison, print_table, process
from pipeline import AFTER_CROPS, make_tree

TARGET = 5.0  # dfb's videos -> crops over ffx's, for crops and for shards (issue 29 item 5)
DFB_SCRIPT = Path(__file__).resolve().parent / "common" / "dfb_public.py"
STEPS = ("detect", "landmarks", "align", "crop detect + landmarks", "save")  # a dfb frame row's columns
BENCH = Bench("dfb", __doc__, rounds=3, max_wait=900.0)
BENCH.option("--frames", 30, "frames per clip: dfb-linspace:N (and the generated clips' length)", minimum=1)
BENCH.option("--generated", 2, "generated originals, each with a fake per FF++ method (4)", minimum=0)
BENCH.option("--no-media", False, "leave out the real clips")
BENCH.option("--workers", None, "ffx --workers (None: all cores)", minimum=1)
BENCH.option("--dfb-threads", None, "dfb's thread pool (None: os.cpu_count(), as DeepfakeBench)", minimum=1)


def dlib68_model() -> str:
    """The 68-point model file of face-recognition-models (located as ffx locates it: the
    package's __init__ needs pkg_resources, gone from recent setuptools)."""
    from ffx.pipeline.media.landmarks import DLIB68, model_file

    return str(model_file(DLIB68))


def video_row(data: dict) -> dict:
    """A dfb video's frames sampled, crops saved and seconds."""
    return {
        "frames": len(data["frames"]),
        "saved": sum(row[-1] for row in data["frames"]),
        "seconds": data["seconds"],
    }


def time_dfb(name: str, spec: dict, work: Path):
    """dfb_public.py over the videos in a fresh Python, timed whole; items: crops saved; the
    stage's own time: the thread pool's wall seconds, the rest start-up (imports, the model)."""
    work.mkdir(parents=True)
    spec = spec | {"out_dir": str(work / "dfb"), "out": str(work / "dfb.json")}
    (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    timing = process(name, [sys.executable, str(DFB_SCRIPT), str(work / "spec.json")])
    report = json.loads((work / "dfb.json").read_text(encoding="utf-8"))
    videos = report.pop("videos")
    rows = [row for data in videos.values() for row in data["frames"]]
    timing.items, timing.unit = sum(bool(row[-1]) for row in rows), "faces"
    timing.startup_seconds = max(0.0, timing.seconds - report["pool_seconds"])
    where = {step: sum(row[1 + n] for row in rows) for n, step in enumerate(STEPS)}
    where |= {
        "decode (every frame)": sum(data["decode"] for data in videos.values()),
        "detector per video": sum(data["model"] for data in videos.values()),
        "predictor once": report["predictor_seconds"],
    }
    timing.extra |= report | {
        "frames_sampled": len(rows),
        "where": {step: round(seconds, 3) for step, seconds in where.items()},
        "per_video": {path: video_row(data) for path, data in videos.items()},
    }
    return timing


def time_ffx(name: str, root: Path, build: Path, frames: int, workers: int | None):
    """`ffx index` then `ffx build` with dlib68 landmarks and DeepfakeBench's sampling, each in its
    own process; items: frames with a main-face crop."""
    sets = ["--set", f"sampling=dfb-linspace:{frames}", "--set", 'crop.landmarks="dlib68"']
    common = ["--root", str(root), "--build", str(build), *sets]
    build_extra = ["--device", "cpu"] + (["--workers", str(workers)] if workers else [])
    commands = ([FFX, "index", "ffpp-c23", *common], [FFX, "build", "ffpp-c23", *common, *build_extra])
    timing = process(name, *commands, build=build)
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    main = [row for row in faces if row["status"] == "ok" and row["track"] == 0]
    timing.items, timing.unit = len(main), "faces"
    stages = timing.extra["stages"]
    timing.extra |= {
        "crops_seconds": timing.seconds - sum(stages.get(stage, 0.0) for stage in AFTER_CROPS),
        "frames_sampled": len({(row["key"], row["frame_index"]) for row in faces}),
        "with_landmarks": sum(bool(row.get("dense_landmarks")) for row in main),
        "build": str(build),
    }
    return timing


def summary(ffx, dfb) -> list[dict]:
    """ffx's videos -> crops and -> shards against dfb's videos -> crops: wall (and CPU, shards)."""
    rows = []
    for output, seconds in (("crops", ffx.extra["crops_seconds"]), ("shards", ffx.seconds)):
        cpu = ffx.total_cpu_seconds if output == "shards" else None
        rows.append(
            {"output": output, "ffx_seconds": seconds, "ffx_startup": ffx.startup_seconds}
            | {"dfb_seconds": dfb.seconds, "ratio": dfb.seconds / seconds, "target": TARGET}
            | {"ffx_cpu": cpu, "dfb_cpu": dfb.total_cpu_seconds if cpu else None}
            | {"cpu_ratio": dfb.total_cpu_seconds / cpu if cpu else None}
        )
    return rows


def print_report(results: dict) -> None:
    columns = [Column("video", "path"), Column("origin", "origin"), Column("frames in file", "frames")]
    frames = results["arguments"]["frames"]
    print_table(f"Input mix (dfb-linspace:{frames} of each):", columns, results["videos"])
    print_comparison(results)
    dfb, ffx = results["dfb"], results["ffx"]
    print(
        f"  dfb: {dfb['threads']} thread(s); {dfb['faces']} crops saved of {dfb['frames_sampled']} "
        f"frames sampled; ffx: {ffx['faces']} main-face crops ({ffx['with_landmarks']} with landmarks) "
        f"of {ffx['frames_sampled']} frames"
    )
    total = sum(dfb["where"].values())
    where = ", ".join(f"{step} {s:.1f} s ({s / total:.0%})" for step, s in dfb["where"].items())
    print(f"  dfb's time, summed over threads: {where}")
    columns = [
        Column("output", "output"),
        Column("ffx s", "ffx_seconds", ".1f"),
        Column("ffx start-up s", "ffx_startup", ".1f"),
        Column("dfb s", "dfb_seconds", ".1f"),
        Column("dfb / ffx", "ratio", ".2f"),
        Column("target", lambda row: f">= {row['target']:g}x"),
        Column("ffx cpu s", "ffx_cpu", ".1f"),
        Column("dfb cpu s", "dfb_cpu", ".1f"),
        Column("cpu dfb / ffx", "cpu_ratio", ".2f"),
    ]
    print_table(
        "ffx's videos -> crops and -> shards against dfb's videos -> crops + landmarks, start-up included:",
        columns,
        results["summary"],
    )


def run(args, work: Path) -> dict:
    import dlib

    media = not args.no_media and (MEDIA_DIR / "videos").is_dir()
    print(f"Set-up (untimed): the FF++-style tree in {work} ...", flush=True)
    root = work / "dataset"
    videos = make_tree(root, args.frames, args.generated, media)
    if not videos:
        sys.exit("no videos: give --generated 1 or more, or have the shared media")
    warm_page_cache([root / video["path"] for video in videos])
    spec = {
        "root": str(root),
        "videos": [video["path"] for video in videos],
        "frames": args.frames,
        "model": dlib68_model(),
        "threads": args.dfb_threads,
    }

    def ffx(number: int):
        return time_ffx("ffx dlib68", root, work / f"ffx-{number}", args.frames, args.workers)

    parts = [
        Part("dfb", lambda number: time_dfb("dfb", spec, work / f"dfb-{number}")),
        Part("ffx dlib68", ffx, "dfb", "seconds"),
    ]
    results = BENCH.compare(parts, args.rounds)
    dfb, ffx_run = results["medians"]["dfb"], results["medians"]["ffx dlib68"]
    keep = ("threads", "frames_sampled", "where", "predictor_seconds", "startup_inside")
    return results | {
        "environment": environment(dlib=dlib.__version__),
        "videos": videos,
        "summary": summary(ffx_run, dfb),
        "dfb": {name: dfb.extra[name] for name in keep} | {"faces": dfb.items},
        "ffx": {name: ffx_run.extra[name] for name in ("frames_sampled", "with_landmarks")}
        | {"faces": ffx_run.items},
    }


if __name__ == "__main__":
    BENCH.main(run, print_report)
