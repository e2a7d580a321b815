"""Benchmark of the `ffx extract` stage against a naive baseline and a decode-only floor.

On one set of clips (synthetic H.264 at 720p and 1080p, plus the real clips in
../shared/media/videos when present), each sampled `first:N` (N = 30 by default), it times:

- ffx: `run_extract` on a freshly indexed build, default workers (all cores), as the CLI runs it;
- naive: the public MCX-API way, one process, `cv2.VideoCapture.read` then `cv2.imwrite`
  with OpenCV's default PNG settings;
- floor: decode only, one process, with each ffx backend (PyAV, ffx's first choice; decord; OpenCV);
- PNG encoding: `cv2.imencode` with ffx's settings and with OpenCV's defaults on the decoded
  frames, as a share of the naive run and of one ffx worker's decode + encode work.

Each timed part also reports the CPU seconds it used (ffx's worker processes included) and
the CPU seconds other processes used meanwhile: on a shared machine, a part with a large
"others" figure was slowed by them (use --repeats to keep each part's fastest round).
It also reports PNG bytes per frame and checks that ffx's PNGs hold exactly the pixels the
decoder gave (and how they compare with OpenCV's decode of the same frame). Clip generation
and indexing are not timed; every input file is read once before timing so that all timed
parts find them in the page cache, and dirty pages are synced before each timed part.

Run from the repository root:

    .venv/bin/python bench/extract.py            # defaults: 4 clips per resolution, 60 frames
    .venv/bin/python bench/extract.py --help

The figures are printed and written to bench/results/extract-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from common import (
    MEDIA_DIR,
    Column,
    Stopwatch,
    Timing,
    add_workdir_options,
    arguments_record,
    available_cores,
    environment,
    media_videos,
    print_environment,
    print_table,
    print_timings,
    run_and_report,
    texture_field,
    tree_bytes,
    warm_page_cache,
)

from ffx.pipeline.media.decode import DEFAULT_BACKENDS

if TYPE_CHECKING:
    from ffx.pipeline.engine.stage import StageReport

RESOLUTIONS = ((1280, 720), (1920, 1080))
FPS = 25
PAN_PER_FRAME = (6, 2)  # pixels the camera moves right and down each frame
NOISE_SIGMA = 2.0  # per-frame sensor-like noise, in 8-bit levels


@dataclass(frozen=True)
class Clip:
    """One input video: its build key, path below the dataset root, and where it came from."""

    key: str
    path: str
    width: int
    height: int
    origin: str  # synthetic | media


@dataclass(frozen=True)
class PngCost:
    """Single-process decode (ffx's first backend, 1 thread, as in one ffx worker) and PNG encode times."""

    frames: int
    decode_seconds: float
    ffx_encode_seconds: float
    default_encode_seconds: float
    ffx_bytes: int
    default_bytes: int


@dataclass(frozen=True)
class PixelCheck:
    """Per clip: ffx PNG vs the decoder's frame, and ffx PNG vs the naive (OpenCV) PNG."""

    key: str
    ffx_backend: str
    frames: int
    roundtrip_max_diff: int  # ffx PNG vs the same backend's decoded frame; 0 = lossless
    vs_opencv_identical: int  # frames whose ffx PNG equals the naive PNG pixel for pixel
    vs_opencv_max_diff: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--clips", type=int, default=4, help="synthetic clips per resolution, 720p and 1080p (default: 4)"
    )
    parser.add_argument("--frames", type=int, default=60, help="frames per synthetic clip (default: 60)")
    parser.add_argument(
        "--first", type=int, default=30, help="frames sampled per video, sampling first:N (default: 30)"
    )
    parser.add_argument("--no-media", action="store_true", help=f"leave out the real clips in {MEDIA_DIR}")
    parser.add_argument(
        "--workers", type=int, default=None, help="ffx worker processes (default: all cores, as the CLI)"
    )
    parser.add_argument(
        "--ffx-backends",
        type=lambda text: tuple(name.strip() for name in text.split(",") if name.strip()),
        default=None,
        metavar="A,B,C",
        help=f"ffx's backend chain, e.g. decord,pyav (default: ffx's own, {','.join(DEFAULT_BACKENDS)})",
    )
    parser.add_argument(
        "--decode-threads",
        type=int,
        default=available_cores(),
        help="decoder threads for the single-process decode-only floors (default: all cores, %(default)s)",
    )
    add_workdir_options(parser, "clips and outputs")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of the timed parts, interleaved; each part's fastest round is reported, "
        "which helps on a busy machine (default: 1)",
    )
    args = parser.parse_args(argv)
    if args.clips < 0 or args.frames < 1 or args.first < 1 or args.repeats < 1:
        parser.error("--clips must be >= 0; --frames, --first and --repeats >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# Inputs (not timed)


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


def make_dataset(root: Path, clips: int, frames: int, include_media: bool) -> None:
    """Synthetic clips under synthetic/WxH/, real clips (symlinked) under media/."""
    for width, height in RESOLUTIONS:
        for number in range(clips):
            path = root / "synthetic" / f"{width}x{height}" / f"clip-{number:02d}.mp4"
            write_clip(path, width, height, frames, seed=width * 100 + number)
    for video in media_videos() if include_media else []:
        link = root / "media" / video.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(video)


def index_dataset(root: Path, build: Path) -> list[Clip]:
    """Index the tree with the `folder` recipe into a fresh build; the clips in key order."""
    from ffx.pipeline.engine import store
    from ffx.pipeline.engine.builddir import BuildDir
    from ffx.pipeline.media.decode import probe
    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.index import run_index

    run_index(load_manifest("folder"), root, build)
    table = store.read_table(BuildDir(build).videos, "`ffx index`").select(["key", "path"]).to_pylist()
    clips = []
    for row in sorted(table, key=lambda row: row["key"]):
        info = probe(root / row["path"])
        origin = row["path"].split("/")[0]
        clips.append(Clip(row["key"], row["path"], info.width, info.height, origin))
    return clips


# ---------------------------------------------------------------------------------------------
# Timed parts


def time_ffx(
    build: Path, sampling: str, workers: int | None, backends: tuple[str, ...] | None
) -> tuple[Timing, StageReport]:
    """`run_extract` as the CLI calls it (no progress bar); the timing and ffx's own report."""
    from ffx.pipeline.stages.extract import run_extract

    stopwatch = Stopwatch()
    chain = backends or None  # None: the recipe's chain (ffx's default); given: written into the recipe
    report = run_extract(build, sampling=sampling, workers=workers, backends=chain, show_progress=False)
    return stopwatch.timing("ffx", report.outputs, "frames"), report


def naive_extract(video: Path, out_dir: Path, first: int) -> int:
    """The MCX-API way: VideoCapture.read, then imwrite with default PNG settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    written = 0
    for index in range(first):
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(f"{out_dir}/{index:04d}.png", frame)
        written += 1
    capture.release()
    return written


def time_naive(root: Path, clips: list[Clip], out_root: Path, first: int) -> Timing:
    stopwatch = Stopwatch()
    frames = sum(naive_extract(root / clip.path, out_root / clip.key, first) for clip in clips)
    return stopwatch.timing("naive", frames, "frames")


def time_decode(backend: str, root: Path, clips: list[Clip], first: int, threads: int) -> Timing:
    """Decode only, one process: consume a backend's frames (RGB arrays) and drop them."""
    from ffx.pipeline.media.decode import BACKENDS
    from ffx.pipeline.media.sampling import parse_sampling

    decode = BACKENDS[backend]
    plan = parse_sampling(f"first:{first}").plan(None)
    frames = 0
    stopwatch = Stopwatch()
    for clip in clips:
        for _frame in decode(root / clip.path, plan, threads):
            frames += 1
    name = f"floor({backend})" if threads != 1 else f"floor({backend}, 1 thread)"
    return stopwatch.timing(name, frames, "frames")


def decode_frames(backend: str, video: Path, first: int, threads: int) -> list[np.ndarray]:
    """The first `first` frames of a video as RGB arrays."""
    from ffx.pipeline.media.decode import BACKENDS
    from ffx.pipeline.media.sampling import parse_sampling

    plan = parse_sampling(f"first:{first}").plan(None)
    return [frame.rgb for frame in BACKENDS[backend](video, plan, threads)]


def measure_png_cost(root: Path, clips: list[Clip], first: int) -> PngCost:
    """Time decoding with ffx's first backend (1 thread, like one ffx worker) and both PNG encodings."""
    from ffx.pipeline.media.images import png_params

    ffx_params = png_params(level=1)
    frames = ffx_bytes = default_bytes = 0
    decode_seconds = ffx_seconds = default_seconds = 0.0
    for clip in clips:
        start = time.perf_counter()
        decoded = decode_frames(DEFAULT_BACKENDS[0], root / clip.path, first, threads=1)
        decode_seconds += time.perf_counter() - start
        for rgb in decoded:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            start = time.perf_counter()
            _ok, ffx_png = cv2.imencode(".png", bgr, ffx_params)
            middle = time.perf_counter()
            _ok, default_png = cv2.imencode(".png", bgr)
            default_seconds += time.perf_counter() - middle
            ffx_seconds += middle - start
            ffx_bytes += ffx_png.nbytes
            default_bytes += default_png.nbytes
            frames += 1
    return PngCost(frames, decode_seconds, ffx_seconds, default_seconds, ffx_bytes, default_bytes)


# ---------------------------------------------------------------------------------------------
# Checks (not timed)


def ffx_backends(build: Path) -> dict[str, str]:
    """The backend ffx used for each key, from its ledger (merged table or chunks)."""
    from ffx.pipeline.engine import store
    from ffx.pipeline.stages.extract import ExtractStage

    stage = ExtractStage()
    rows = store.Ledger(build, stage.name, stage.schema, sort_by=["key"]).rows().select(["key", "backend"])
    return dict(zip(rows.column("key").to_pylist(), rows.column("backend").to_pylist()))


def max_abs_diff(first: np.ndarray | None, second: np.ndarray | None) -> int:
    """Largest per-pixel difference; 255 when either image is missing or shapes differ."""
    if first is None or second is None or first.shape != second.shape:
        return 255
    return int(cv2.absdiff(first, second).max())


def check_pixels(
    root: Path, clip: Clip, build: Path, naive_root: Path, backend: str, first: int
) -> PixelCheck:
    """Compare each ffx PNG of a clip with its backend's decode and with the naive PNG."""
    from ffx.pipeline.engine.builddir import frame_file

    decoded = decode_frames(backend, root / clip.path, first, threads=1) if backend else []
    roundtrip = vs_opencv = identical = 0
    for index, rgb in enumerate(decoded):
        ffx_png = cv2.imread(str(build / frame_file(clip.key, index)), cv2.IMREAD_UNCHANGED)
        naive_png = cv2.imread(str(naive_root / clip.key / f"{index:04d}.png"), cv2.IMREAD_UNCHANGED)
        roundtrip = max(roundtrip, max_abs_diff(ffx_png, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
        diff = max_abs_diff(ffx_png, naive_png)
        vs_opencv = max(vs_opencv, diff)
        identical += diff == 0
    return PixelCheck(clip.key, backend, len(decoded), roundtrip, identical, vs_opencv)


# ---------------------------------------------------------------------------------------------
# Report


def versions() -> dict:
    """The environment with the decoders' and OpenCV's versions."""
    import av
    import decord

    return environment(
        av=av.__version__, decord=decord.__version__, cv2=cv2.__version__, numpy=np.__version__
    )


def print_report(results: dict) -> None:
    png = results["png"]
    print_environment(results["environment"])
    sizes = Counter(f"{clip['width']}x{clip['height']} {clip['origin']}" for clip in results["clips"])
    print(
        f"Inputs: {len(results['clips'])} clips, sampling {results['sampling']}: "
        + ", ".join(f"{count} x {size}" for size, count in sorted(sizes.items()))
    )
    repeats = results["arguments"]["repeats"]
    if repeats > 1:
        print(f"\nFastest of {repeats} rounds per part:")
    print_timings("", results["timings"], rate="frames/s")
    ratios = results["ratios"]
    print(f"\nffx / naive throughput:          {ratios['ffx_over_naive']:.2f}x")
    print(f"ffx / floor({ratios['floor_backend']}) throughput:    {ratios['ffx_over_floor']:.2f}x")
    report = results["ffx_report"]
    print(
        f"ffx report{' (round 1)' if repeats > 1 else ''}: {report['videos']} videos, "
        f"statuses {report['by_status']}, backends "
        f"{report['backends']}, merged {report['merged']}, own seconds {report['seconds']:.2f}"
    )
    for number, (by_status, failed) in enumerate(
        zip(report["by_status_per_round"], report["failed_per_round"])
    ):
        if repeats > 1:
            print(f"  round {number + 1}: statuses {by_status}")
        for key, status, error in failed:
            print(f"  failed: {key} [{status}] {error}")

    best = " (fastest round)" if repeats > 1 else ""
    print(f"\nPNG encoding on {png['frames']} decoded frames, one process{best}:")
    print(f"  {DEFAULT_BACKENDS[0]} decode, 1 thread:     {png['decode_ms_per_frame']:7.1f} ms/frame")
    print(
        f"  imencode, ffx params:      {png['ffx_encode_ms_per_frame']:7.1f} ms/frame  "
        f"{png['ffx_bytes_per_frame'] / 1e6:.2f} MB/frame"
    )
    print(
        f"  imencode, default params:  {png['default_encode_ms_per_frame']:7.1f} ms/frame  "
        f"{png['default_bytes_per_frame'] / 1e6:.2f} MB/frame"
    )
    print(f"  share of naive run that is PNG encoding:          {png['naive_share']:.0%}")
    print(f"  share of ffx worker work (decode + encode) in PNG: {png['ffx_share']:.0%}")

    outputs = results["outputs"]
    print(
        f"\nPNG bytes/frame on disk: ffx {outputs['ffx_bytes_per_frame'] / 1e6:.2f} MB "
        f"({outputs['ffx_files']} files), naive {outputs['naive_bytes_per_frame'] / 1e6:.2f} MB "
        f"({outputs['naive_files']} files), ffx/naive {outputs['ffx_over_naive_bytes']:.2f}"
    )
    checks = [
        check
        | {"lossless": "yes" if check["roundtrip_max_diff"] == 0 else f"no ({check['roundtrip_max_diff']})"}
        for check in results["pixel_checks"]
    ]
    columns = [
        Column("clip", "key"),
        Column("backend", "ffx_backend"),
        Column("frames", "frames"),
        Column("lossless", "lossless"),
        Column("=opencv", "vs_opencv_identical"),
        Column("max|d|", "vs_opencv_max_diff"),
    ]
    print_table(
        "Pixel checks (ffx PNG vs its backend's decoded frame; ffx PNG vs the naive OpenCV PNG):",
        columns,
        checks,
    )


def summarise(
    args: argparse.Namespace,
    clips: list[Clip],
    timings: list[Timing],
    all_timings: list[Timing],
    reports: list[StageReport],
    png: PngCost,
    build: Path,
    naive_root: Path,
    checks: list[PixelCheck],
) -> dict:
    """Every figure of the run as a JSON-ready dict; `timings` are the fastest of each part
    over the rounds, `reports` ffx's own report of each round (outputs are those of round 1)."""
    from ffx.pipeline.engine.builddir import BuildDir

    report = reports[0]
    by_name = {timing.name: timing for timing in timings}
    ffx, naive = by_name["ffx"], by_name["naive"]
    floor_backend = (args.ffx_backends or DEFAULT_BACKENDS)[0]
    floor = by_name.get(f"floor({floor_backend})") or by_name[f"floor({floor_backend}, 1 thread)"]
    ffx_files, ffx_bytes = tree_bytes(BuildDir(build).frames, "*.png")
    naive_files, naive_bytes = tree_bytes(naive_root, "*.png")
    frames = max(png.frames, 1)
    ffx_per_frame, naive_per_frame = ffx_bytes / max(ffx_files, 1), naive_bytes / max(naive_files, 1)
    return {
        "environment": versions(),
        "arguments": arguments_record(args),
        "sampling": f"first:{args.first}",
        "clips": [asdict(clip) for clip in clips],
        "timings": [timing.as_dict() for timing in timings],
        "all_timings": [timing.as_dict() for timing in all_timings],
        "ratios": {
            "ffx_over_naive": ffx.rate / naive.rate if naive.rate else None,
            "floor_backend": floor_backend,
            "ffx_over_floor": ffx.rate / floor.rate if floor.rate else None,
        },
        "ffx_report": {
            "videos": report.items,
            "by_status": dict(report.items_by_status),
            "by_status_per_round": [dict(each.items_by_status) for each in reports],
            "failed_per_round": [[list(item) for item in each.failed] for each in reports],
            "frames": report.outputs,
            "seconds": report.seconds,
            "merged": report.merged,
            "failed": [list(item) for item in report.failed],
            "backends": dict(Counter(check.ffx_backend for check in checks)),
        },
        "png": asdict(png)
        | {
            "decode_ms_per_frame": 1000 * png.decode_seconds / frames,
            "ffx_encode_ms_per_frame": 1000 * png.ffx_encode_seconds / frames,
            "default_encode_ms_per_frame": 1000 * png.default_encode_seconds / frames,
            "ffx_bytes_per_frame": png.ffx_bytes / frames,
            "default_bytes_per_frame": png.default_bytes / frames,
            "naive_share": (png.default_encode_seconds / frames * naive.items) / naive.seconds,
            "ffx_share": png.ffx_encode_seconds / (png.ffx_encode_seconds + png.decode_seconds),
        },
        "outputs": {
            "ffx_files": ffx_files,
            "ffx_bytes_per_frame": ffx_per_frame,
            "naive_files": naive_files,
            "naive_bytes_per_frame": naive_per_frame,
            "ffx_over_naive_bytes": ffx_per_frame / naive_per_frame if naive_per_frame else None,
        },
        "pixel_checks": [asdict(check) for check in checks],
    }


# ---------------------------------------------------------------------------------------------


def time_round(
    args: argparse.Namespace, root: Path, clips: list[Clip], workdir: Path, number: int
) -> tuple[list[Timing], StageReport]:
    """One round of every timed part, on its own output folders; ffx's timing comes first."""
    label = f" (round {number + 1} of {args.repeats})" if args.repeats > 1 else ""
    timings = []
    for backend in DEFAULT_BACKENDS:
        print(f"Timing decode-only floor: {backend}{label} ...", flush=True)
        timings.append(time_decode(backend, root, clips, args.first, args.decode_threads))
    print(f"Timing naive baseline{label} ...", flush=True)
    timings.append(time_naive(root, clips, workdir / f"naive-{number}", args.first))
    print(f"Timing ffx extract{label} ...", flush=True)
    build = workdir / f"build-{number}"
    ffx_timing, report = time_ffx(build, f"first:{args.first}", args.workers, args.ffx_backends)
    return [ffx_timing, *timings], report


def run(args: argparse.Namespace, workdir: Path) -> dict:
    root = workdir / "dataset"
    print(f"Generating clips in {root} ...", flush=True)
    make_dataset(root, args.clips, args.frames, include_media=not args.no_media and MEDIA_DIR.is_dir())
    if not any(root.rglob("*.mp4")):
        sys.exit("no clips to benchmark: use --clips 1 or more, or have the shared media")
    clips = index_dataset(root, workdir / "build-0")
    for number in range(1, args.repeats):
        index_dataset(root, workdir / f"build-{number}")
    warm_page_cache([root / clip.path for clip in clips])

    rounds = [time_round(args, root, clips, workdir, number) for number in range(args.repeats)]
    round_timings = [timings for timings, _report in rounds]
    all_timings = [timing for timings in round_timings for timing in timings]
    fastest = [min(same_part, key=lambda timing: timing.seconds) for same_part in zip(*round_timings)]
    print("Timing PNG encoding ...", flush=True)
    png = min(
        (measure_png_cost(root, clips, args.first) for _ in range(args.repeats)),
        key=lambda cost: cost.decode_seconds + cost.ffx_encode_seconds + cost.default_encode_seconds,
    )
    print("Checking pixels (round 1 outputs) ...", flush=True)
    build, naive_root = workdir / "build-0", workdir / "naive-0"
    backends = ffx_backends(build)
    checks = [
        check_pixels(root, clip, build, naive_root, backends.get(clip.key, ""), args.first) for clip in clips
    ]
    reports = [report for _timings, report in rounds]
    return summarise(args, clips, fastest, all_timings, reports, png, build, naive_root, checks)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_and_report("extract", args, run, print_report)


if __name__ == "__main__":
    main()
