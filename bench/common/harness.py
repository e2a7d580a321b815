"""The one bench harness. A benchmark declares its options (`Bench.option`), makes its inputs
untimed, then hands `Bench.compare` its parts: ffx's command and the baseline it is measured
against, each a function of the round number that returns a `Timing` (`process` times a whole
command as a user runs it, start-up included, and reads the stage's own seconds from the build's
runs.jsonl). The parts run in alternating rounds (ffx, baseline, ffx, baseline, ...), each after
waiting for a quiet machine; the median run of each part is kept, the ratios are computed on the
stage's own time and on the whole process, and `Bench.main` prints them with where the time goes
and writes every figure to bench/results/NAME-TIMESTAMP.json."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.quiet import BUSY_PATTERNS, Quiet

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), idle and iowait excluded."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[float, float]:
    """(user + system CPU seconds of this process, of its reaped children and their children)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@dataclass
class Timing:
    """One timed run: whole wall seconds and the start-up share of them (so `own_seconds` is the
    stage's own time); CPU seconds of this process, of its reaped children (subprocesses, workers),
    of every other process meanwhile (None without /proc/stat); the items and bytes it handled."""

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
        """Items per second of the stage's own time (start-up left out)."""
        return self.items / self.own_seconds if self.own_seconds > 0 else 0.0

    @property
    def wall_rate(self) -> float:
        """Items per second of the whole wall time, start-up included."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.own_seconds if self.own_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        names = ("own_seconds", "total_cpu_seconds", "rate", "wall_rate", "mb_per_second")
        return asdict(self) | {name: getattr(self, name) for name in names}


class Stopwatch:
    """Times one run from its making, dirty pages synced first (an earlier run's writes are not
    flushed on its time). `startup_done()` ends the start-up; `stop()` ends the wall time early
    (a loader's last batch) while CPU time runs on until `timing()` reads it (workers joined)."""

    def __init__(self) -> None:
        os.sync()
        self.machine, self.start = machine_busy_seconds(), time.perf_counter()
        self.cpu, self.children = cpu_times()
        self.startup, self.stopped = 0.0, None

    def startup_done(self) -> None:
        self.startup = time.perf_counter() - self.start

    def stop(self) -> None:
        self.stopped = time.perf_counter()

    def seconds(self) -> float:
        return (self.stopped or time.perf_counter()) - self.start

    def timing(self, name: str, items: int = 0, unit: str = "items", bytes: int = 0, **extra) -> Timing:
        """The run's Timing so far; `startup_seconds` in `extra` replaces the marked start-up."""
        seconds, (cpu, children), machine = self.seconds(), cpu_times(), machine_busy_seconds()
        cpu, children = cpu - self.cpu, children - self.children
        others = (
            None
            if machine is None or self.machine is None
            else max(0.0, machine - self.machine - cpu - children)
        )
        startup = extra.pop("startup_seconds", self.startup)
        return Timing(name, seconds, cpu, children, others, startup, items, unit, bytes, extra)


def stage_seconds(build: Path, skip: int = 0) -> dict[str, float]:
    """Own seconds per stage logged in BUILD/runs.jsonl, its first `skip` lines left out."""
    log = build / "runs.jsonl"
    totals: dict[str, float] = {}
    for line in log.read_text(encoding="utf-8").splitlines()[skip:] if log.is_file() else []:
        run = json.loads(line)
        totals[run["stage"]] = round(totals.get(run["stage"], 0.0) + run["seconds"], 3)
    return totals


def process(
    name: str,
    *commands: Sequence[str],
    build: Path | None = None,
    items: int | Callable[[], int] = 0,
    **extra,
) -> Timing:
    """Commands run one after the other, each in its own process as a user runs it: their whole
    wall time, their CPU seconds and their children's (wait4), the peak RSS; with `build`, each
    stage's own seconds from the runs they logged to BUILD/runs.jsonl, the rest of the wall time
    being the start-up. `items` may be a function read after the run (e.g. the rows written). A
    failure stops the benchmark."""
    log = None if build is None else build / "runs.jsonl"
    before = len(log.read_text().splitlines()) if log is not None and log.is_file() else 0
    stopwatch, peak = Stopwatch(), 0.0
    for argv in commands:
        child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = child.stdout.read() if child.stdout else b""
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode, peak = os.waitstatus_to_exitcode(status), max(peak, usage.ru_maxrss / 1024)
        if child.returncode:
            raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{output.decode(errors='replace')[-3000:]}")
    stopwatch.stop()
    stages = stage_seconds(build, before) if build is not None else {}
    if stages:
        extra |= {"stages": stages, "startup_seconds": max(0.0, stopwatch.seconds() - sum(stages.values()))}
    count = items() if callable(items) else items
    return stopwatch.timing(name, count, peak_rss_mb=peak, **extra)


def median_run(timings: Sequence[Timing]) -> Timing:
    """The run of median wall time (the faster of the middle two): a real run, its figures together."""
    return sorted(timings, key=lambda timing: timing.seconds)[(len(timings) - 1) // 2]


@dataclass
class Part:
    """One timed thing: a function of the round number giving its Timing; an ffx part names the
    baseline part(s) it is compared with (`versus`) and what the ratio compares (`by`: "rate", items
    per second; "mb", MB per second; "seconds", the same work's time); higher is better for ffx."""

    name: str
    run: Callable[[int], Timing]
    versus: str | tuple[str, ...] = ()
    by: str = "rate"


SPEED = {  # (on the stage's own time, on the whole process): a figure that grows with speed
    "rate": (lambda t: t.rate, lambda t: t.wall_rate),
    "mb": (lambda t: t.mb_per_second, lambda t: t.bytes / 1e6 / t.seconds if t.seconds else 0.0),
    "seconds": (lambda t: 1 / t.own_seconds if t.own_seconds > 0 else 0.0, lambda t: 1 / t.seconds),
}


def ratio(ffx: Timing, baseline: Timing, by: str = "rate") -> dict:
    """How many times faster ffx is than its baseline, on the stage's own time and whole process."""
    own, whole = ((speed(ffx) / speed(baseline) if speed(baseline) else None) for speed in SPEED[by])
    return {"ffx": ffx.name, "baseline": baseline.name, "by": by, "ratio": own, "whole_ratio": whole}


def merged(*results: dict) -> dict:
    """Several comparisons' figures as one: their medians, every run, their ratios."""
    return {
        key: [row for result in results for row in result[key]]
        for key in ("timings", "all_timings", "ratios")
    }


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Column:
    """A table column: header, the cell (a key of a dict row or a function of the row), a format."""

    header: str
    value: str | Callable[[Any], object]
    spec: str = ""

    def cell(self, row: Any) -> str:
        value = self.value(row) if callable(self.value) else row.get(self.value)  # missing: n/a
        if value is None:
            return "n/a"
        return format(value, self.spec) if self.spec and isinstance(value, (int, float)) else str(value)


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Any]) -> None:
    """A title line, then the rows: the first column left-aligned, the others right."""
    cells = [[column.cell(row) for column in columns] for row in rows]
    widths = [
        max(len(text) for text in (c.header, *(line[n] for line in cells))) for n, c in enumerate(columns)
    ]

    def line(texts: Sequence[str]) -> str:
        return "  " + "  ".join(
            t.ljust(w) if n == 0 else t.rjust(w) for n, (t, w) in enumerate(zip(texts, widths))
        )

    if title:
        print(f"\n{title}")
    for texts in ([column.header for column in columns], *cells):
        print(line(texts).rstrip())


TIMING_COLUMNS = (
    Column("part", "name"),
    Column("items", "items"),
    Column("wall s", "seconds", ".2f"),
    Column("start-up s", "startup_seconds", ".2f"),
    Column("own s", "own_seconds", ".2f"),
    Column("rate", "rate", ".1f"),
    Column("MB/s", lambda row: row["mb_per_second"] or None, ".1f"),
    Column("cpu s", "cpu_seconds", ".2f"),
    Column("children cpu s", "children_cpu_seconds", ".2f"),
    Column("others cpu s", "other_cpu_seconds", ".2f"),
)


def print_timings(title: str, timings: Sequence[Timing | dict]) -> None:
    """A table of timings (rate: items per second of the stage's own time)."""
    rows = [timing.as_dict() if isinstance(timing, Timing) else timing for timing in timings]
    print_table(title, TIMING_COLUMNS, rows)


def print_comparison(results: dict) -> None:
    """The medians, the ratios (stage and whole process), where the time goes, the machine's load."""
    timings = results["timings"]
    print_timings(f"Median of {results['arguments'].get('rounds', 1)} alternating round(s):", timings)
    for row in results["ratios"]:
        what = {"mb": "MB/s", "rate": "items/s", "seconds": "speed"}[row["by"]]
        own, whole = (
            f"{value:.2f}x" if value is not None else "n/a" for value in (row["ratio"], row["whole_ratio"])
        )
        print(f"  {row['ffx']} / {row['baseline']} ({what}): {own} own time, {whole} with start-up")
    for timing in timings:
        if stages := timing["extra"].get("stages"):
            where = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items())
            print(f"  {timing['name']}: start-up {timing['startup_seconds']:.1f} s, then {where}")
    busy = [t["name"] for t in results["all_timings"] if (t["other_cpu_seconds"] or 0) > 0.25 * t["seconds"]]
    if busy:
        print(
            f"WARNING: other processes used over a quarter of a core during: {'; '.join(dict.fromkeys(busy))}"
        )
    if waited := sum(wait["seconds"] for wait in results["waits"]):
        print(f"Waited {waited:.0f} s in all for test runs or other benchmarks ({', '.join(BUSY_PATTERNS)}).")


# ---------------------------------------------------------------------------------------------
# The command line, the rounds and the results file


class Bench:
    """A benchmark's command line (with --rounds, --max-wait, --workdir, --keep), its work dir,
    its alternating rounds and its results file."""

    def __init__(self, name: str, doc: str, rounds: int = 1, max_wait: float = 600.0, workdir: bool = True):
        self.name, self.minimums, self.quiet = name, {}, Quiet(max_wait)
        first, _, rest = doc.partition("\n\n")
        self.parser = argparse.ArgumentParser(
            description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self.option(
            "--rounds", rounds, "alternating rounds of the timed parts; each part's median", minimum=1
        )
        self.parser.add_argument("--repeats", dest="rounds", type=int, help="the same as --rounds")
        self.option(
            "--max-wait", max_wait, "seconds to wait at most, before each timed part, for a quiet machine"
        )
        if workdir:
            self.parser.add_argument(
                "--workdir", type=Path, help="an empty or new folder, kept (default: a temp dir)"
            )
            self.parser.add_argument("--keep", action="store_true", help="keep the temp work dir")

    def option(self, flag: str, default: Any, help: str, minimum: float | None = None, **kw) -> None:
        """Add `flag` (typed as its default; a bool default makes a switch); `minimum` is checked."""
        if isinstance(default, bool):
            self.parser.add_argument(flag, action="store_true", help=help, **kw)
            return
        kw.setdefault("type", type(default) if default is not None else int)
        self.parser.add_argument(flag, default=default, help=f"{help} (default: %(default)s)", **kw)
        if minimum is not None:
            self.minimums[flag.lstrip("-").replace("-", "_")] = (flag, minimum)

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        for dest, (flag, minimum) in self.minimums.items():
            if getattr(args, dest) is not None and getattr(args, dest) < minimum:
                self.parser.error(f"{flag} must be at least {minimum:g}")
        self.quiet.max_wait = args.max_wait
        return args

    def compare(self, parts: Sequence[Part], rounds: int) -> dict:
        """Every part `rounds` times in alternating rounds; the medians, every run, the ratios."""
        runs: dict[str, list[Timing]] = {part.name: [] for part in parts}
        for number in range(rounds):
            for part in parts:
                print(
                    f"Timing {part.name}" + (f" (round {number + 1} of {rounds})" if rounds > 1 else ""),
                    flush=True,
                )
                self.quiet.wait(part.name)
                runs[part.name].append(part.run(number))
        medians = {name: median_run(timings) for name, timings in runs.items()}
        return {
            "medians": medians,
            "timings": [timing.as_dict() for timing in medians.values()],
            "all_timings": [timing.as_dict() for timings in runs.values() for timing in timings],
            "ratios": [
                ratio(medians[part.name], medians[versus], part.by)
                for part in parts
                for versus in ((part.versus,) if isinstance(part.versus, str) else part.versus)
            ],
        }

    def main(
        self, run: Callable[[argparse.Namespace, Path], dict], report: Callable[[dict], None] | None = None
    ) -> dict:
        """Parse, run in the work dir, write the results file, print the report (default: the
        comparison) and the file's path."""
        from common import environment, print_environment

        args = self.parse()
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        with work_dir(self.name, getattr(args, "workdir", None), getattr(args, "keep", False)) as work:
            results = run(args, work)
            results.pop("medians", None)
            results.setdefault("environment", environment())
            results |= {"arguments": arguments_record(args), "waits": self.quiet.waits}
            path = write_results(self.name, results, getattr(args, "out", RESULTS_DIR))
            print_environment(results["environment"])
            (report or print_comparison)(results)
            print(f"\nResults: {path}")
        return results


@contextmanager
def work_dir(benchmark: str, workdir: Path | None, keep: bool) -> Iterator[Path]:
    """`workdir` (made if new, must be empty, kept) or a new temp dir, removed unless `keep`."""
    if workdir is not None and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"--workdir {workdir} is not empty: give a new or empty folder")
    path = workdir or Path(tempfile.mkdtemp(prefix=f"ffx-bench-{benchmark}-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if workdir is None and not keep:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"Work dir kept: {path}")


def arguments_record(args: argparse.Namespace) -> dict:
    """The command-line arguments as JSON values (paths as strings)."""
    return {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()}


def write_results(benchmark: str, results: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write `results` to DIRECTORY/<benchmark>-<timestamp>.json, its path added as results_file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results["results_file"] = str(path)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path
