"""Waiting for a quiet machine: the benchmarks time nothing while a test run or another benchmark
runs (BUSY_PATTERNS), and note what showed up while a part was timed."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BUSY_PATTERNS = (
    "pytest",
    "bench/extract.py",
    "bench/crop.py",
    "bench/shard.py",
    "bench/train.py",
    "bench/pipeline.py",
    "bench/gpu.py",
)
POLL_SECONDS = 10.0  # while waiting for a quiet machine
WATCH_SECONDS = 1.0  # while a timed part runs under BusyWatch


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
    records each wait as {part, seconds, gave_up, busy_after}."""

    max_wait: float
    waits: list[dict] = field(default_factory=list)

    def wait(self, part: str) -> None:
        seconds, gave_up = wait_until_quiet(part, self.max_wait)
        self.waits.append(
            {"part": part, "seconds": round(seconds, 1), "gave_up": gave_up, "busy_after": busy_processes()}
        )


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
