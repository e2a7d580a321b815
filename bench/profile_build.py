"""Where `ffx build`'s time goes: one build of bench/pipeline.py's tree, its workers' tasks run in
this process under cProfile (one core), the time summed by part of the pass.

Prints each part's seconds and share (MTCNN with its area resampling and network layers, PNG
compression, colour conversions, hashing, decoding, file writes, crop resizing), then the
functions with the most own time; the parts go to bench/results/profile_build-TIMESTAMP.json, and
with --keep or --workdir the whole profile stays in the work dir (build.prof, for snakeviz or
pstats). Not a comparison: the figures are one process's, slower than `ffx build` on all cores,
and the profiler adds some time.

    .venv/bin/python bench/profile_build.py --frames 30
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import time
from collections import deque
from pathlib import Path

from common import MEDIA_DIR
from common.harness import Bench
from pipeline import make_tree

import ffx.pipeline.engine.stage as stage_module
import ffx.pipeline.stages.shard as shard_module
from ffx.cli import app
from ffx.pipeline.engine.workers import call_guarded

# Each part: (name, the end of a function's name as pstats writes it, line number left out, "own"
# or "with callees").
PARTS = (
    ("MTCNN (facenet-pytorch's detect_face)", "detect_face.py(detect_face)", "with callees"),
    # Area resampling: the pyramid's levels and, in most calls, each candidate box on its own.
    ("  of it: area resampling", "{built-in method torch._C._nn.adaptive_avg_pool2d}", "own"),
    ("  of it: convolutions", "{built-in method torch.conv2d}", "own"),
    ("  of it: PReLU", "{built-in method torch.prelu}", "own"),
    ("  of it: max-pooling", "{built-in method torch.max_pool2d}", "own"),
    ("PNG compression (libdeflate)", "{built-in method deflate._deflate.zlib_compress}", "own"),
    ("PNG compression (opencv)", "{imencode}", "own"),
    ("colour conversions", "ffx/pipeline/media/color.py(convert)", "with callees"),
    ("sha256 of streamed files", "{method 'update' of '_hashlib.HASH' objects}", "own"),
    ("sha256 of buffers (pixels, PNGs)", "{built-in method _hashlib.openssl_sha256}", "own"),
    ("decoding (PyAV)", "ffx/pipeline/media/decode.py(decode_pyav)", "with callees"),
    ("file writes", "{method 'write' of '_io.BufferedWriter' objects}", "own"),
    ("fsync", "{built-in method posix.fsync}", "own"),
    ("crop resizing (PIL)", "{method 'resize' of 'ImagingCore' objects}", "own"),
)


def run_inline(function, tasks, workers, stall_seconds, on_report=None, retry=None, follow_up=None):
    """The engine's `run_tasks` in this process, in its order (follow-up tasks first)."""
    pending = deque(tasks)
    while pending:
        task = pending.popleft()
        result = call_guarded(function, task, lambda payload: None)
        yield task, result
        if follow_up is not None:
            pending.extendleft(reversed(list(follow_up(task, result))))


def part_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Each of PARTS' seconds: the matching functions' own or cumulative time."""
    found = {}
    for name, suffix, kind in PARTS:
        rows = [row for key, row in stats.stats.items() if _unnumbered(key).endswith(suffix)]
        found[name] = sum(row[2] if kind == "own" else row[3] for row in rows)
    return found


def _unnumbered(key: tuple[str, int, str]) -> str:
    """pstats' name of a function without its line number: `path(name)` or `{built-in ...}`."""
    return re.sub(r":\d+\(", "(", pstats.func_std_string(key))


def run(args, work: Path) -> dict:
    """Index and build the tree in this process, the build under cProfile; its parts and top functions."""
    stage_module.run_tasks = shard_module.run_tasks = run_inline
    root, build = work / "tree", work / "build"
    make_tree(root, args.frames, args.generated, (MEDIA_DIR / "videos").is_dir())
    common = ["--root", str(root), "--build", str(build), "--set", f"sampling=first:{args.frames}"]
    common += [option for value in args.set for option in ("--set", value)]
    app(["index", "ffpp-c23", *common], standalone_mode=False)
    BENCH.quiet.wait("build")
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(app, ["build", "ffpp-c23", *common, "--device", "cpu"], standalone_mode=False)
    seconds = time.perf_counter() - start
    profile.dump_stats(str(work / "build.prof"))
    listing = io.StringIO()
    stats = pstats.Stats(profile, stream=listing)
    stats.sort_stats("tottime").print_stats(args.top)
    return {"seconds": seconds, "parts": part_seconds(stats), "top_functions": listing.getvalue()}


def report(results: dict) -> None:
    print(results["top_functions"])
    print(f"ffx build in one process, profiled: {results['seconds']:.1f} s")
    for name, value in results["parts"].items():
        if value == 0:  # a part this build has none of (the other PNG encoder)
            continue
        print(f"  {name:46s} {value:6.2f} s  {100 * value / results['seconds']:4.0f} %")


BENCH = Bench("profile_build", __doc__)
BENCH.option("--frames", 30, "frames per clip, first:N", minimum=1)
BENCH.option("--generated", 2, "generated originals, each with a fake per FF++ method", minimum=0)
BENCH.option("--top", 25, "functions listed by own time", minimum=1)
BENCH.option("--set", [], "a recipe override, as for ffx build (repeatable)", type=str, action="append")

if __name__ == "__main__":
    BENCH.main(run, report)
