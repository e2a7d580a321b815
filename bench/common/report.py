"""The one report helper of the benchmarks: a table printer, the standard table of timings, the
busy-machine warnings, the work dir and the JSON results file in bench/results/."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.timing import Timing

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class Column:
    """One column of a table: its header, how to get the cell from a row (a key of a dict row,
    or a function of the row) and a format spec for numbers (e.g. ".2f")."""

    header: str
    value: str | Callable[[Any], object]
    spec: str = ""

    def cell(self, row: Any) -> str:
        value = self.value(row) if callable(self.value) else row[self.value]
        if value is None:
            return "n/a"
        return format(value, self.spec) if self.spec and isinstance(value, (int, float)) else str(value)


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Any], indent: int = 2) -> None:
    """A title line, then the rows as a table: the first column left-aligned, the others right,
    each as wide as its widest cell."""
    cells = [[column.cell(row) for column in columns] for row in rows]
    widths = [
        max(len(text) for text in (column.header, *(line[n] for line in cells)))
        for n, column in enumerate(columns)
    ]
    pad = " " * indent

    def line(texts: Sequence[str]) -> str:
        first, *others = (
            text.ljust(w) if n == 0 else text.rjust(w) for n, (text, w) in enumerate(zip(texts, widths))
        )
        return pad + "  ".join([first, *others]).rstrip()

    if title:
        print(f"\n{title}")
    print(line([column.header for column in columns]))
    for texts in cells:
        print(line(texts))


def timing_columns(rate: str = "", mb: bool = False, startup: bool = False) -> list[Column]:
    """The standard columns of a table of Timing rows: name, items, (MB), seconds, (start-up),
    rate (`rate` names it, e.g. "frames/s"; items per second of the part's own time), CPU seconds
    of this process and of its children, and the other processes' CPU seconds."""
    columns = [Column("part", "name"), Column("items", "items")]
    if mb:
        columns.append(Column("MB", lambda timing: timing.bytes / 1e6, ".1f"))
    columns.append(Column("seconds", "seconds", ".2f"))
    if startup:
        columns.append(Column("start-up s", "startup_seconds", ".2f"))
    columns += [
        Column(
            rate or "items/s", lambda timing: timing.mb_per_second if rate == "MB/s" else timing.rate, ".1f"
        ),
        Column("cpu s", "cpu_seconds", ".2f"),
        Column("children cpu s", "children_cpu_seconds", ".2f"),
        Column("others cpu s", "other_cpu_seconds", ".2f"),
    ]
    return columns


class _Row(dict):
    """A dict row readable as attributes too, so that timing_columns serve Timing.as_dict() rows."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def print_timings(title: str, timings: Sequence[Timing | dict], **options) -> None:
    """A table of timings (Timing objects or their as_dict()); `options` as timing_columns'."""
    rows = [_Row(timing.as_dict() if isinstance(timing, Timing) else timing) for timing in timings]
    print_table(title, timing_columns(**options), rows)


def print_machine_load(timings: Sequence[Timing | dict], waits: Sequence[dict] = ()) -> None:
    """Say how busy the machine was: the parts during which other processes used over a quarter
    of a core, and how long the run waited for test runs or other benchmarks to finish."""
    rows = [timing.as_dict() if isinstance(timing, Timing) else timing for timing in timings]
    busy = [
        row["name"]
        for row in rows
        if row["other_cpu_seconds"] is not None and row["other_cpu_seconds"] > 0.25 * row["seconds"]
    ]
    if busy:
        print(f"WARNING: other processes used over a quarter of a core during: {'; '.join(busy)}")
    waited = sum(wait["seconds"] for wait in waits)
    gave_up = [wait["part"] for wait in waits if wait.get("gave_up")]
    if waited:
        print(f"Waited {waited:.0f} s in all for test runs or other benchmarks to finish.")
    if gave_up:
        print(f"WARNING: gave up waiting for a quiet machine before: {'; '.join(gave_up)}")


def print_environment(env: dict) -> None:
    """One line: the CPUs, then every library version and setting the script recorded."""
    skip = {"cpu_count", "cpus_available", "platform", "ffx", "git"}
    others = "   ".join(f"{name} {value}" for name, value in env.items() if name not in skip)
    print(
        f"\nCPUs: {env['cpu_count']} ({env['cpus_available']} available)   {others}   "
        f"ffx {env['ffx']} ({env['git']})   {env['platform']}"
    )


def verdict(ratio: float | None, target: float) -> str:
    """ "meets" or "misses" a >= target, for a report line."""
    if ratio is None:
        return "n/a"
    return f"{'meets' if ratio >= target else 'misses'} the >= {target:g}x target"


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


@contextmanager
def work_dir(benchmark: str, workdir: Path | None, keep: bool) -> Iterator[Path]:
    """The run's work dir: `workdir` (made if new, must be empty, kept) or a new temp dir, removed
    at the end unless `keep`; prints the path of a kept one."""
    if workdir is not None:
        if workdir.exists() and any(workdir.iterdir()):
            sys.exit(f"--workdir {workdir} is not empty: give a new or empty folder")
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


def write_results(benchmark: str, results: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write `results` to DIRECTORY/<benchmark>-<timestamp>.json (bench/results/ by default), its
    path added as results_file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results["results_file"] = str(path)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def run_and_report(
    benchmark: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path], dict],
    report: Callable[[dict], None] | None = None,
) -> dict:
    """Run a benchmark in its work dir (see work_dir), write its results file, print its report
    (if any: a script may print as it goes) and the results file's path; the results."""
    with work_dir(benchmark, args.workdir, args.keep) as workdir:
        results = run(args, workdir)
        write_results(benchmark, results)
        if report is not None:
            report(results)
        print(f"\nResults: {results['results_file']}")
    return results
