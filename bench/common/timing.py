"""The one timing helper of the benchmarks: wall-clock seconds, this process's CPU seconds, its
reaped children's CPU seconds (worker processes, subprocesses) and the other processes' CPU
seconds meanwhile, with the start-up (imports, workers starting, warm-up steps, first batch)
kept apart from the part's own time; and interleaved rounds of several parts."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.quiet import Quiet


def cpu_times() -> tuple[float, float]:
    """(user + system CPU seconds of this process, of its reaped children)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), idle and iowait excluded."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    """One timed part. `seconds` is its whole wall time, `startup_seconds` the share of it spent
    starting up (so `own_seconds` is the part's own work); CPU seconds of this process, of its
    reaped children, and of every other process meanwhile (None without /proc/stat); `items`
    (frames, faces, samples ...; `unit` names them) and `bytes` it handled; `extra`: anything
    else the script records about it."""

    name: str
    seconds: float
    cpu_seconds: float
    children_cpu_seconds: float
    other_cpu_seconds: float | None
    startup_seconds: float = 0.0
    items: int = 0
    unit: str = "items"
    bytes: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def own_seconds(self) -> float:
        return self.seconds - self.startup_seconds

    @property
    def total_cpu_seconds(self) -> float:
        return self.cpu_seconds + self.children_cpu_seconds

    @property
    def rate(self) -> float:
        """Items per second of the part's own time (start-up left out)."""
        return self.items / self.own_seconds if self.own_seconds > 0 else 0.0

    @property
    def wall_rate(self) -> float:
        """Items per second of the whole wall time, start-up included."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.own_seconds if self.own_seconds > 0 else 0.0

    @property
    def busy(self) -> bool:
        """Whether other processes used over a quarter of a core while it ran."""
        return self.other_cpu_seconds is not None and self.other_cpu_seconds > 0.25 * self.seconds

    def as_dict(self) -> dict:
        return asdict(self) | {
            "own_seconds": self.own_seconds,
            "total_cpu_seconds": self.total_cpu_seconds,
            "rate": self.rate,
            "wall_rate": self.wall_rate,
            "mb_per_second": self.mb_per_second,
        }


class Stopwatch:
    """Times one part from its making: it syncs dirty pages first, so that an earlier part's
    writes are not flushed on this part's time. `startup_done()` marks the end of the start-up;
    `stop()` ends the wall-clock time early (e.g. at a loader's last batch) while CPU time runs on
    until `timing()` reads it (e.g. once the loader's workers are joined)."""

    def __init__(self) -> None:
        os.sync()
        self.machine = machine_busy_seconds()
        self.start = time.perf_counter()
        self.cpu, self.children = cpu_times()
        self.startup: float = 0.0
        self.stopped: float | None = None

    def startup_done(self) -> None:
        """The start-up ends now: what follows is the part's own time."""
        self.startup = time.perf_counter() - self.start

    def stop(self) -> None:
        """End the wall-clock time now; CPU time still counts until it is read."""
        self.stopped = time.perf_counter()

    def seconds(self) -> float:
        """Wall-clock seconds from the start to `stop()`, or to now."""
        return (self.stopped or time.perf_counter()) - self.start

    def timing(
        self,
        name: str,
        items: int = 0,
        unit: str = "items",
        bytes: int = 0,
        startup_seconds: float | None = None,
        **extra,
    ) -> Timing:
        """The part's Timing so far; `startup_seconds` (if given) replaces the start-up that
        `startup_done()` marked, for a part that learns it afterwards (e.g. from a log)."""
        seconds = self.seconds()
        cpu, children = cpu_times()
        cpu, children = cpu - self.cpu, children - self.children
        machine = machine_busy_seconds()
        others = None
        if machine is not None and self.machine is not None:
            others = max(0.0, machine - self.machine - cpu - children)
        startup = self.startup if startup_seconds is None else startup_seconds
        return Timing(name, seconds, cpu, children, others, startup, items, unit, bytes, extra)


def median_run(timings: Sequence[Timing]) -> Timing:
    """The run of median wall time (the lower of the two middle ones for an even count): a real
    run, so that its figures belong together."""
    ordered = sorted(timings, key=lambda timing: timing.seconds)
    return ordered[(len(ordered) - 1) // 2]


def fastest_run(timings: Sequence[Timing]) -> Timing:
    return min(timings, key=lambda timing: timing.seconds)


def interleaved(
    rounds: int,
    parts: Sequence[tuple[str, Callable[[int], Timing]]],
    quiet: Quiet,
    pick: Callable[[Sequence[Timing]], Timing] = fastest_run,
) -> tuple[list[Timing], list[Timing]]:
    """Run every part `rounds` times, rounds interleaved (A, B, ..., then A, B, ... again) so that a
    passing disturbance hits all of them alike, each after waiting for a quiet machine; each
    part's picked timing (fastest_run or median_run), in the order given, and all the timings."""
    runs: dict[str, list[Timing]] = {label: [] for label, _part in parts}
    for number in range(rounds):
        for label, part in parts:
            of = f" (round {number + 1} of {rounds})" if rounds > 1 else ""
            print(f"Timing {label}{of} ...", flush=True)
            quiet.wait(label)
            runs[label].append(part(number))
    return [pick(timings) for timings in runs.values()], [t for timings in runs.values() for t in timings]


def spread(timings: Sequence[Timing]) -> str:
    """The wall times of several runs of one part, for the report (e.g. "12.1 / 12.4 / 13.0 s")."""
    return " / ".join(f"{timing.seconds:.1f}" for timing in sorted(timings, key=lambda t: t.seconds)) + " s"
