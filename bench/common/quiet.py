"""Waiting for a quiet machine: the benchmarks time nothing while a test run or another benchmark
runs (BUSY_PATTERNS), and record each wait."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BUSY_PATTERNS = ("pytest", "bench/extract.py", "bench/crop.py", "bench/shard.py", "bench/train.py",
                 "bench/pipeline.py", "bench/gpu.py", "bench/dfb.py", "bench/png.py")  # fmt: skip
POLL_SECONDS = 10.0


def busy_processes() -> list[str]:
    """Command lines of running test runs and benchmarks, leaving out this process, its ancestors
    (the shell that started it) and its descendants."""
    me = os.getpid()
    mine = _ancestors(me)
    pattern = "|".join(re.escape(name) for name in BUSY_PATTERNS)  # one pgrep: cheap enough to poll
    result = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    found = []
    for line in result.stdout.splitlines():
        pid, _, command = line.partition(" ")
        if int(pid) not in mine and me not in _ancestors(int(pid)):
            found.append(command)
    return found


def _ancestors(pid: int) -> set[int]:
    """`pid` and its ancestors, from /proc (without /proc: `pid`, and our parent if it is us)."""
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


@dataclass
class Quiet:
    """Waits before each timed part until no busy process runs (at most `max_wait` seconds), and
    records each wait as {part, seconds, gave_up}."""

    max_wait: float
    waits: list[dict] = field(default_factory=list)

    def wait(self, part: str) -> None:
        start = time.monotonic()
        while (busy := busy_processes()) and time.monotonic() - start < self.max_wait:
            print(f"  [{part}] waiting for {len(busy)} process(es) to finish: {busy[0][:80]}", flush=True)
            time.sleep(POLL_SECONDS)
        if busy:
            print(f"  [{part}] gave up waiting; still running: {busy[0][:80]}", flush=True)
        self.waits.append(
            {"part": part, "seconds": round(time.monotonic() - start, 1), "gave_up": bool(busy)}
        )
