"""Helpers the benchmark scripts in bench/ share: paths, waiting for a quiet machine, CPU-time
accounting, the environment, synthetic inputs, the work dir and the results file.

The scripts import it as `from common import ...`: Python puts a script's own folder first on
sys.path, so this works when they are run as `.venv/bin/python bench/<name>.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDIA_DIR = REPO.parent / "shared" / "media"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CROP_SIDE = 512  # ffx crop's default output size
CLIP_SQUARE = 0.75  # the centred square cut from a clip frame, as a share of its shorter side
TRAIN_SHARDS = 8  # the automatic --shard-size aims at this many train shards
BUSY_PATTERNS = ("pytest", "bench/extract.py", "bench/crop.py", "bench/shard.py", "bench/train.py")
POLL_SECONDS = 10.0  # while waiting for a quiet machine
WATCH_SECONDS = 1.0  # while a timed part runs under BusyWatch


# ---------------------------------------------------------------------------------------------
# A quiet machine


def busy_processes() -> list[str]:
    """Command lines of running test runs and benchmarks (BUSY_PATTERNS) that would disturb the
    timings, leaving out this process, its ancestors (the shell that started it) and its descendants."""
    me = os.getpid()
    mine = _ancestors(me)
    pattern = "|".join(re.escape(name) for name in BUSY_PATTERNS)  # one pgrep: cheap enough to poll
    result = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    found = []
    for line in result.stdout.splitlines():
        pid_text, _, command = line.partition(" ")
        pid = int(pid_text)
        if pid not in mine and me not in _ancestors(pid):
            found.append(command)
    return found


def _ancestors(pid: int) -> set[int]:
    """`pid`, its parent, grandparent and so on, from /proc (without /proc: `pid`, and our parent if
    `pid` is this process)."""
    chain = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            if len(chain) == 1 and pid == os.getpid():
                chain.add(os.getppid())
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        chain.add(pid)
    return chain


def wait_until_quiet(part: str, max_wait: float) -> tuple[float, bool]:
    """Block until busy_processes() finds none, checking every POLL_SECONDS, or until `max_wait`
    seconds passed; (seconds waited, whether it gave up)."""
    start = time.monotonic()
    while busy := busy_processes():
        waited = time.monotonic() - start
        if waited >= max_wait:
            print(
                f"  [{part}] gave up waiting after {waited:.0f} s; still running: {busy[0][:80]}", flush=True
            )
            return waited, True
        print(
            f"  [{part}] waiting for {len(busy)} process(es) to finish ({waited:.0f} s): {busy[0][:80]}",
            flush=True,
        )
        time.sleep(POLL_SECONDS)
    return time.monotonic() - start, False


@dataclass
class Quiet:
    """Waits, before each timed part, until no busy process runs (at most `max_wait` seconds), and
    records each wait as {part, seconds, busy_after}."""

    max_wait: float
    waits: list[dict] = field(default_factory=list)

    def wait(self, part: str) -> None:
        seconds, _gave_up = wait_until_quiet(part, self.max_wait)
        self.waits.append({"part": part, "seconds": round(seconds, 1), "busy_after": busy_processes()})


class BusyWatch:
    """A context manager that looks for busy processes every WATCH_SECONDS in a thread while a
    timed part runs; `seen` holds their command lines."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            self.seen.update(busy_processes())

    def __enter__(self) -> BusyWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(busy_processes())


def add_max_wait_option(parser: argparse.ArgumentParser, default: float) -> None:
    """The --max-wait option: how long to wait for a quiet machine before each timed part."""
    parser.add_argument(
        "--max-wait",
        type=float,
        default=default,
        help="before each timed part, wait at most this many seconds while a test run or another "
        f"benchmark ({', '.join(BUSY_PATTERNS)}) is running (default: %(default)g; then the part "
        "runs anyway and the output says so)",
    )


# ---------------------------------------------------------------------------------------------
# CPU time


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (e.g. worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), idle and iowait excluded."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """Wall-clock seconds, own CPU seconds (reaped children included) and other processes' CPU
    seconds since it was made. It syncs dirty pages first, so that an earlier part's writes are
    not flushed on this part's time; `stop()` ends the wall-clock time early (e.g. at a loader's
    last batch) while CPU time runs on until it is read."""

    def __init__(self) -> None:
        os.sync()
        self.machine = machine_busy_seconds()
        self.start = time.perf_counter()
        self.cpu = own_cpu_seconds()
        self.stopped: float | None = None

    def stop(self) -> None:
        """End the wall-clock time now; CPU time still counts until it is read."""
        self.stopped = time.perf_counter()

    def seconds(self) -> float:
        """Wall-clock seconds from the start to `stop()`, or to now."""
        return (self.stopped or time.perf_counter()) - self.start

    def cpu_seconds(self) -> tuple[float, float | None]:
        """(own CPU seconds, other processes' CPU seconds or None without /proc/stat) so far."""
        cpu = own_cpu_seconds() - self.cpu
        machine = machine_busy_seconds()
        others = None if machine is None or self.machine is None else max(0.0, machine - self.machine - cpu)
        return cpu, others

    def figures(self) -> tuple[float, float, float | None]:
        """(wall-clock seconds, own CPU seconds, other processes' CPU seconds) so far."""
        return self.seconds(), *self.cpu_seconds()


def format_seconds(seconds: float | None) -> str:
    """Seconds with two decimals for a report, "n/a" for None."""
    return "n/a" if seconds is None else f"{seconds:.2f}"


# ---------------------------------------------------------------------------------------------
# Environment


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask on Linux, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def git_describe() -> str:
    """`git describe --always --dirty` of the repository ("" outside a git checkout)."""
    result = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
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


# ---------------------------------------------------------------------------------------------
# Options, work dir and results


def add_workdir_options(parser: argparse.ArgumentParser, contents: str) -> None:
    """The --workdir and --keep options; `contents` says what the work dir holds."""
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help=f"work dir for {contents}; must be empty or new, and is never removed "
        "(default: a temp dir, removed at the end unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp work dir and print its path")


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


@contextmanager
def work_dir(benchmark: str, workdir: Path | None, keep: bool) -> Iterator[Path]:
    """The run's work dir: `workdir` (made if new, must be empty, kept) or a new temp dir, removed
    at the end unless `keep`; prints the path of a kept one."""
    if workdir is not None:
        if workdir.exists() and any(workdir.iterdir()):
            sys.exit(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        path, remove = workdir, False
    else:
        path, remove = Path(tempfile.mkdtemp(prefix=f"ffx-bench-{benchmark}-")), not keep
    try:
        yield path
    finally:
        if remove:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"Work dir kept: {path}")


def arguments_record(args: argparse.Namespace) -> dict:
    """The command-line arguments as JSON values (paths as strings)."""
    return {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()}


def write_results(benchmark: str, results: dict) -> Path:
    """Write `results` to bench/results/<benchmark>-<timestamp>.json, its path added as results_file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results["results_file"] = str(path)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def run_and_report(
    benchmark: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path], dict],
    report: Callable[[dict], None],
) -> None:
    """Run a benchmark in its work dir (see work_dir), write its results file, then print its report."""
    with work_dir(benchmark, args.workdir, args.keep) as workdir:
        results = run(args, workdir)
        write_results(benchmark, results)
        report(results)
