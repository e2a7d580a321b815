"""What the benchmark scripts in bench/ share: one timing helper (common.timing), one report
helper (common.report: tables, the results file), waiting for a quiet machine (common.quiet),
and here the paths, the environment and the synthetic inputs.

The scripts import it as `from common import ...`: Python puts a script's own folder first on
sys.path, so this works when they are run as `.venv/bin/python bench/<name>.py`. Importing it
appends the repository root to sys.path (after the installed packages, so an `ffx` on PYTHONPATH
still wins), for `tests.generated`.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from common.quiet import (
    BUSY_PATTERNS,
    BusyWatch,
    Quiet,
    add_max_wait_option,
    busy_processes,
    wait_until_quiet,
)
from common.report import (
    RESULTS_DIR,
    Column,
    add_workdir_options,
    arguments_record,
    print_environment,
    print_machine_load,
    print_table,
    print_timings,
    run_and_report,
    timing_columns,
    verdict,
    work_dir,
    write_results,
)
from common.timing import (
    Stopwatch,
    Timing,
    cpu_times,
    fastest_run,
    interleaved,
    machine_busy_seconds,
    median_run,
    spread,
)

REPO = Path(__file__).resolve().parents[2]
MEDIA_DIR = REPO.parent / "shared" / "media"
CROP_SIDE = 512  # ffx crop's default output size
CLIP_SQUARE = 0.75  # the centred square cut from a clip frame, as a share of its shorter side
TRAIN_SHARDS = 8  # the automatic --shard-size aims at this many train shards
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

__all__ = [
    "BUSY_PATTERNS",
    "CLIP_SQUARE",
    "CROP_SIDE",
    "MEDIA_DIR",
    "REPO",
    "RESULTS_DIR",
    "TRAIN_SHARDS",
    "BusyWatch",
    "Column",
    "Quiet",
    "Stopwatch",
    "Timing",
    "add_max_wait_option",
    "add_shard_size_option",
    "add_workdir_options",
    "arguments_record",
    "available_cores",
    "busy_processes",
    "cpu_times",
    "environment",
    "fastest_run",
    "git_describe",
    "interleaved",
    "machine_busy_seconds",
    "media_videos",
    "median_run",
    "print_environment",
    "print_machine_load",
    "print_table",
    "print_timings",
    "run_and_report",
    "spread",
    "square_crop",
    "texture",
    "texture_field",
    "timing_columns",
    "tree_bytes",
    "verdict",
    "wait_until_quiet",
    "warm_page_cache",
    "work_dir",
    "write_results",
]


# ---------------------------------------------------------------------------------------------
# Environment


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask on Linux, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def git_describe() -> str:
    """`git describe --always --dirty` of the repository ("" outside a git checkout or without
    git, as on a lent GPU machine)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    return result.stdout.strip()


def environment(**versions: object) -> dict:
    """CPUs, platform, Python, ffx and its git revision, then the given library versions."""
    import ffx

    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": available_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ffx": ffx.__version__,
        "git": git_describe(),
        **versions,
    }


# ---------------------------------------------------------------------------------------------
# Inputs


def media_videos() -> list[Path]:
    """The real clips in ../shared/media/videos, sorted (none when the folder is absent)."""
    return sorted((MEDIA_DIR / "videos").glob("*.mp4"))


def texture_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-looking RGB texture (float32, about 128 +- 45): noise octaves upscaled from 2x to
    128x, larger ones stronger (roughly 1/f), so it has smooth areas and fine detail like a scene."""
    field = np.zeros((height, width, 3), np.float32)
    for scale in (2, 4, 8, 16, 32, 64, 128):
        coarse = rng.standard_normal((height // scale + 3, width // scale + 3, 3), dtype=np.float32)
        size = ((coarse.shape[1] - 1) * scale, (coarse.shape[0] - 1) * scale)
        upscaled = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
        field += scale * upscaled[scale : scale + height, scale : scale + width]
    return 128 + field / field.std() * 45


def texture(seed: int, side: int) -> np.ndarray:
    """A seeded `side` x `side` uint8 RGB image of texture_field."""
    return np.clip(texture_field(np.random.default_rng(seed), side, side), 0, 255).astype(np.uint8)


def square_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    """The centred square of a frame (CLIP_SQUARE of its shorter side), resized to `side`."""
    height, width = rgb.shape[:2]
    square = int(min(height, width) * CLIP_SQUARE)
    top, left = (height - square) // 2, (width - square) // 2
    interpolation = cv2.INTER_AREA if square > side else cv2.INTER_CUBIC
    return cv2.resize(
        rgb[top : top + square, left : left + square], (side, side), interpolation=interpolation
    )


def warm_page_cache(paths: Iterable[Path]) -> None:
    """Read every input once so that all timed parts start with them in the page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def tree_bytes(directory: Path, pattern: str = "*") -> tuple[int, int]:
    """(files, bytes) of the files matching `pattern` below `directory`."""
    sizes = [path.stat().st_size for path in directory.rglob(pattern) if path.is_file()]
    return len(sizes), sum(sizes)


def add_shard_size_option(parser: argparse.ArgumentParser) -> None:
    """The --shard-size option: run_shard's max_count (the recipe's shard.max_count) of the
    benchmark's shards (None: automatic)."""
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help=f"samples per shard, run_shard's max_count (default: the train samples / {TRAIN_SHARDS}, "
        "rounded up)",
    )
