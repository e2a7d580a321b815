"""Benchmark of the `ffx extract` stage against a naive baseline and decode-only floors.

On one set of clips (synthetic H.264 at 720p and 1080p, a camera panning over a texture with a
little noise, plus the real clips in ../shared/media/videos when present), each sampled `first:N`
(--first), timed in alternating rounds:

- ffx: `ffx extract BUILD --sample first:N` on a freshly indexed build, in its own process as a user
  runs it, default workers (all cores); its own time is the stage's seconds in BUILD/runs.jsonl;
- naive: the public MCX-API way, one process, `cv2.VideoCapture.read` then `cv2.imwrite` with
  OpenCV's default PNG settings;
- floor: decode only, one process, with each ffx backend (PyAV, ffx's first choice; decord; OpenCV).

Also: PNG encoding (`cv2.imencode` with ffx's settings and OpenCV's defaults) as a share of the naive
run and of one ffx worker's decode + encode; PNG bytes per frame; whether ffx's PNGs hold exactly
the pixels the decoder gave, and how they compare with OpenCV's PNG of the same frame.

    .venv/bin/python bench/extract.py            # defaults: 4 clips per resolution, 60 frames
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from common import (
    FFX,
    MEDIA_DIR,
    available_cores,
    environment,
    media_videos,
    texture_field,
    tree_bytes,
    warm_page_cache,
)
from common.harness import Bench, Column, Part, Stopwatch, print_comparison, print_table, process

from ffx.pipeline.media.decode import BACKENDS, DEFAULT_BACKENDS
from ffx.pipeline.media.sampling import parse_sampling

RESOLUTIONS = ((1280, 720), (1920, 1080))
FPS, PAN_PER_FRAME, NOISE_SIGMA = 25, (6, 2), 2.0  # the camera's pixels a frame; noise in 8-bit levels
BENCH = Bench("extract", __doc__, rounds=1, max_wait=600.0)
BENCH.option("--clips", 4, "synthetic clips per resolution, 720p and 1080p", minimum=0)
BENCH.option("--frames", 60, "frames per synthetic clip", minimum=1)
BENCH.option("--first", 30, "frames sampled per video, sampling first:N", minimum=1)
BENCH.option("--no-media", False, f"leave out the real clips in {MEDIA_DIR}")
BENCH.option("--workers", None, "ffx worker processes (None: all cores, as the CLI)", minimum=1)
BENCH.option(
    "--ffx-backends", "", f"ffx's backend chain, e.g. decord,pyav (default: {','.join(DEFAULT_BACKENDS)})"
)
BENCH.option("--decode-threads", available_cores(), "decoder threads of the decode-only floors", minimum=1)


def write_clip(path: Path, width: int, height: int, frames: int, seed: int) -> None:
    """An H.264 clip of a camera panning over a texture, with a little per-frame noise."""
    import av

    rng = np.random.default_rng(seed)
    dx, dy = PAN_PER_FRAME
    field = texture_field(rng, height + dy * frames, width + dx * frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(frames):
            view = field[dy * index : dy * index + height, dx * index : dx * index + width]
            noisy = view + NOISE_SIGMA * rng.standard_normal(view.shape, dtype=np.float32)
            rgb = np.clip(noisy, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def index(root: Path, build: Path) -> list[dict]:
    """Index the tree with the `folder` recipe into a fresh build; its clips (key, path) in key order."""
    import pyarrow.parquet as pq

    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.index import run_index

    run_index(load_manifest("folder"), root, build)
    return sorted(
        pq.read_table(build / "videos.parquet", columns=["key", "path"]).to_pylist(),
        key=lambda row: row["key"],
    )


def decode(backend: str, video: Path, first: int, threads: int):
    """The first `first` frames of a video as ffx's `backend` decodes them (RGB arrays)."""
    return (
        frame.rgb for frame in BACKENDS[backend](video, parse_sampling(f"first:{first}").plan(None), threads)
    )


def time_naive(root: Path, clips: list[dict], out: Path, first: int):
    """The MCX-API way: VideoCapture.read, then imwrite with default PNG settings."""
    stopwatch, written = Stopwatch(), 0
    for clip in clips:
        (out / clip["key"]).mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(root / clip["path"]))
        for number in range(first):
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imwrite(f"{out / clip['key']}/{number:04d}.png", frame)
            written += 1
        capture.release()
    return stopwatch.timing("naive", written, "frames")


def time_floor(backend: str, root: Path, clips: list[dict], first: int, threads: int):
    """Decode only, one process: consume a backend's frames and drop them."""
    stopwatch = Stopwatch()
    frames = sum(1 for clip in clips for _frame in decode(backend, root / clip["path"], first, threads))
    return stopwatch.timing(f"floor({backend})" + (", 1 thread" if threads == 1 else ""), frames, "frames")


def png_cost(root: Path, clips: list[dict], first: int) -> dict:
    """Seconds to decode with ffx's first backend (1 thread, as one ffx worker) and to encode PNGs with
    ffx's and OpenCV's default settings; the PNG bytes."""
    from ffx.pipeline.media.images import png_params

    cost, params = Counter(), png_params(level=1)
    for clip in clips:
        start = time.perf_counter()
        decoded = list(decode(DEFAULT_BACKENDS[0], root / clip["path"], first, 1))
        cost["decode_seconds"] += time.perf_counter() - start
        for rgb in decoded:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            for name, options in (("ffx", params), ("default", [])):
                start = time.perf_counter()
                cost[f"{name}_bytes"] += cv2.imencode(".png", bgr, options)[1].nbytes
                cost[f"{name}_encode_seconds"] += time.perf_counter() - start
            cost["frames"] += 1
    return dict(cost)


def pixel_checks(root: Path, clips: list[dict], build: Path, naive: Path, first: int) -> list[dict]:
    """Per clip: ffx's PNGs against its backend's decode (0: lossless) and against the naive PNGs."""
    from ffx.pipeline.engine import store
    from ffx.pipeline.engine.builddir import frame_file
    from ffx.pipeline.stages.extract import ExtractStage

    stage = ExtractStage()
    rows = store.Ledger(build, stage.name, stage.schema, sort_by=["key"]).rows().select(["key", "backend"])
    backends = dict(zip(rows.column("key").to_pylist(), rows.column("backend").to_pylist()))

    def diff(first: np.ndarray | None, second: np.ndarray | None) -> int:
        same_shape = first is not None and second is not None and first.shape == second.shape
        return int(cv2.absdiff(first, second).max()) if same_shape else 255

    checks = []
    for clip in clips:
        backend, roundtrip, differences = backends.get(clip["key"], ""), 0, []
        for number, rgb in enumerate(decode(backend, root / clip["path"], first, 1) if backend else []):
            ffx_png = cv2.imread(str(build / frame_file(clip["key"], number)), cv2.IMREAD_UNCHANGED)
            naive_png = cv2.imread(f"{naive / clip['key']}/{number:04d}.png", cv2.IMREAD_UNCHANGED)
            roundtrip = max(roundtrip, diff(ffx_png, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
            differences.append(diff(ffx_png, naive_png))
        lossless = "yes" if roundtrip == 0 else f"no ({roundtrip})"
        row = {"key": clip["key"], "backend": backend, "frames": len(differences), "lossless": lossless}
        checks.append(
            row | {"vs_opencv_identical": differences.count(0), "max_diff": max(differences, default=0)}
        )
    return checks


def print_report(results: dict) -> None:
    print(f"Inputs: {len(results['clips'])} clips, first:{results['arguments']['first']}: {results['sizes']}")
    print_comparison(results)
    png, frames = results["png"], max(results["png"]["frames"], 1)
    print(f"\nPNG encoding on {png['frames']} decoded frames, one process:")
    print(
        f"  {DEFAULT_BACKENDS[0]} decode, 1 thread:     {1000 * png['decode_seconds'] / frames:7.1f} ms/frame"
    )
    for name in ("ffx", "default"):
        ms, megabytes = 1000 * png[f"{name}_encode_seconds"] / frames, png[f"{name}_bytes"] / frames / 1e6
        print(f"  imencode, {name + ' params:':<16}{ms:7.1f} ms/frame  {megabytes:.2f} MB/frame")
    print(f"  share of the naive run that is PNG encoding:      {results['naive_png_share']:.0%}")
    print(f"  share of ffx worker work (decode + encode) in PNG: {results['ffx_png_share']:.0%}")
    out = results["outputs"]
    print(f"\nPNG bytes/frame on disk: ffx {out['ffx'] / 1e6:.2f} MB, naive {out['naive'] / 1e6:.2f} MB")
    columns = [
        Column(name, name)
        for name in ("key", "backend", "frames", "lossless", "vs_opencv_identical", "max_diff")
    ]
    print_table(
        "Pixel checks (ffx PNG vs its backend's decode; vs the naive OpenCV PNG):", columns, results["checks"]
    )


def run(args, work: Path) -> dict:
    import av
    import decord

    root = work / "dataset"
    print(f"Generating clips in {root} ...", flush=True)
    for width, height in RESOLUTIONS:
        for number in range(args.clips):
            write_clip(root / f"synthetic/{width}x{height}/clip-{number:02d}.mp4", width, height, args.frames,
                       seed=width * 100 + number)  # fmt: skip
    for video in [] if args.no_media else media_videos():
        (root / "media").mkdir(parents=True, exist_ok=True)
        (root / "media" / video.name).symlink_to(video)
    if not any(root.rglob("*.mp4")):
        sys.exit("no clips to benchmark: use --clips 1 or more, or have the shared media")
    clips = [index(root, work / f"build-{number}") for number in range(args.rounds)][0]  # noqa: RUF015 (one a round)
    warm_page_cache([root / clip["path"] for clip in clips])
    flags = ["--sample", f"first:{args.first}"] + (["--workers", str(args.workers)] if args.workers else [])
    flags += ["--backend", args.ffx_backends] if args.ffx_backends else []

    def ffx(number: int):
        build = work / f"build-{number}"
        return process(
            "ffx extract",
            [FFX, "extract", str(build), *flags],
            build=build,
            items=lambda: tree_bytes(build / "frames")[0],
        )

    floors = [Part(f"floor {b}", lambda _n, b=b: time_floor(b, root, clips, args.first, args.decode_threads))
              for b in DEFAULT_BACKENDS]  # fmt: skip
    first_floor = f"floor {(args.ffx_backends or DEFAULT_BACKENDS[0]).split(',')[0]}"
    naive = Part("naive", lambda number: time_naive(root, clips, work / f"naive-{number}", args.first))
    results = BENCH.compare([Part("ffx extract", ffx, ("naive", first_floor)), naive, *floors], args.rounds)
    print("Timing PNG encoding ...", flush=True)
    png = png_cost(root, clips, args.first)
    naive = results["medians"]["naive"]
    ffx_files, ffx_bytes = tree_bytes(work / "build-0" / "frames", "*.png")
    naive_files, naive_bytes = tree_bytes(work / "naive-0", "*.png")
    return results | {
        "environment": environment(av=av.__version__, decord=decord.__version__, cv2=cv2.__version__),
        "clips": clips,
        "sizes": dict(Counter(f"{path.parent.name}" for path in root.rglob("*.mp4"))),
        "png": png,
        "naive_png_share": png["default_encode_seconds"]
        / max(png["frames"], 1)
        * naive.items
        / naive.seconds,
        "ffx_png_share": png["ffx_encode_seconds"] / (png["ffx_encode_seconds"] + png["decode_seconds"]),
        "outputs": {"ffx": ffx_bytes / max(ffx_files, 1), "naive": naive_bytes / max(naive_files, 1)},
        "checks": pixel_checks(root, clips, work / "build-0", work / "naive-0", args.first),
    }


if __name__ == "__main__":
    BENCH.main(run, print_report)
