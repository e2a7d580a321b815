"""Growth table (issue 23): every command's wall time and peak RSS as the build grows, run as a user
runs them (a fresh `ffx` process each, start-up included), with each command's growth exponent.

    python bench/scale.py --work /tmp/scale                      # decoded 10, 1 000, 5 000, 20 000
    python bench/scale.py --work /tmp/scale --table-only 12000 120000

Decoded builds: DFDC-shaped trees from bench/scale_tree.py (hard links to 66 distinct real-codec
clips of the bundled portrait), built with `ffx build dfdc --set sampling=first:1 --set
crop.size=128 --set shard.max_count=4` (20 000 videos give 5 000 shards; a build made without the
shard size gets `ffx shard --shard-size 4` first). Measured on them: index, status, verify, the
no-op rerun of extract, crop, shard and build, one part of four finishing (a no-op
`ffx build --part 3/4`), export (mcx-api lists), and `ffx train` to its first step (resnet18,
crop 64, CPU), its shard-check cache cold (a new run folder) then warm (a new run folder holding
the cold run's shard-checks.json).

Table-only builds (bench/scale_tables.py: 30 frame rows a video, every file a hard link) are built
when missing and measured for the commands that read tables only (not verify, export or train).

Each exponent is the slope of log(t - t10) over log(videos), t10 the same command on the 10-video
build of the same kind (least squares over the sizes where t - t10 is at least 0.2 s; "—" where
fewer than two sizes are: no growth above start-up noise). Times are the best of 3 runs. Peak
RSS is the `ffx` process's own (ru_maxrss from wait4): worker processes are not in it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.scale_tree, bench.scale_tables

from common import environment  # bench/, this script's folder
from common.report import write_results

from bench.scale_tables import make_table_only, recipe_settings
from bench.scale_tree import make_dfdc

FFX = str(Path(sys.executable).with_name("ffx"))
NOISE_FLOOR = 0.2  # seconds: how much a command's best of 3 runs on 10 videos varies
SHARD_SIZE = 4  # samples a shard: 20 000 videos give 5 000 shards
DECODED_SETTINGS = {"sampling": "first:1", "crop.size": 128, "shard.max_count": SHARD_SIZE}
TRAIN = [
    "--backbone",
    "resnet18",
    "--crop",
    "64",
    "--classes-per-batch",
    "2",
    "--max-steps",
    "1",
    "--device",
    "cpu",
    "--workers",
    "1",
]


def run(arguments: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `ffx` process; a failure stops the bench."""
    started = time.perf_counter()
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{output.decode(errors='replace')[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def settings_flags(settings: dict) -> list[str]:
    return [flag for name, value in settings.items() for flag in ("--set", f"{name}={value}")]


def decoded_build(work: Path, videos: int) -> tuple[Path, Path]:
    """The tree and the finished build of `videos` videos (made once, kept in `work`)."""
    tree, build = work / f"tree-{videos}", work / f"build-{videos}"
    if not (build / "build.json").is_file():
        make_dfdc(tree, videos)
        flags = settings_flags(DECODED_SETTINGS)
        seconds, _ = run([FFX, "build", "dfdc", "--root", str(tree), "--build", str(build), *flags])
        print(f"  built {videos} videos in {seconds:.0f} s", flush=True)
    run([FFX, "shard", str(build), "--shard-size", str(SHARD_SIZE)])
    return tree, build


def table_build(work: Path, videos: int) -> tuple[Path, Path]:
    out = work / f"tables-{videos}"
    if not (out / "build" / "build.json").is_file():
        make_table_only(out, videos)
    return out / "tree", out / "build"


def measure(tree: Path, build: Path, settings: dict, decoded: bool, repeats: int) -> dict[str, tuple]:
    """Each command's best wall time of `repeats` and its peak RSS."""
    recipe = ["--root", str(tree), "--build", str(build), *settings_flags(settings)]
    again = [FFX, "build", "dfdc", *recipe]
    commands = {
        "index": [FFX, "index", "dfdc", *recipe],
        "status": [FFX, "status", str(build)],
        "no-op extract": [FFX, "extract", str(build)],
        "no-op crop": [FFX, "crop", str(build)],
        "no-op shard": [FFX, "shard", str(build)],
        "no-op build": again,
        "part 3/4 (no-op build)": [*again, "--part", "3/4"],
    }
    if decoded:
        commands["verify"] = [FFX, "verify", str(build)]
    results = {}
    for name, arguments in commands.items():
        results[name] = min((run(arguments) for _ in range(repeats)), key=lambda result: result[0])
    if decoded:
        results.update(measure_export_and_train(build))
    return results


def measure_export_and_train(build: Path) -> dict[str, tuple]:
    scratch = build.parent / f"{build.name}.scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    results = {
        "export": run([FFX, "export", str(build), "--format", "mcx-api", "--out", str(scratch / "lists")])
    }
    cold, warm = scratch / "cold", scratch / "warm"
    results["train, checks cold"] = run(
        [FFX, "train", "--shards", str(build / "shards"), "--run", str(cold), *TRAIN]
    )
    warm.mkdir()
    shutil.copy(cold / "shard-checks.json", warm / "shard-checks.json")
    results["train, checks warm"] = run(
        [FFX, "train", "--shards", str(build / "shards"), "--run", str(warm), *TRAIN]
    )
    index = json.loads((build / "shards" / "index.json").read_text())
    megabytes = sum(entry["bytes"] for entry in index["shards"]) / 1e6
    hashing = results["train, checks cold"][0] - results["train, checks warm"][0]
    results["shards"] = (
        len(index["shards"]),
        megabytes,
        megabytes / hashing if hashing > 0 else float("nan"),
    )
    shutil.rmtree(scratch)
    return results


def exponent(sizes: list[int], seconds: list[float], base: float) -> float:
    """Least-squares slope of log(t - base) over log(videos), over the sizes where the command
    takes at least NOISE_FLOOR seconds more than on 10 videos (below that, start-up noise decides
    the slope); nan when fewer than two sizes do: no growth that can be told from noise."""
    points = [(math.log(n), math.log(t - base)) for n, t in zip(sizes, seconds) if t - base >= NOISE_FLOOR]
    if len(points) < 2:
        return float("nan")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def table(title: str, sizes: list[int], results: dict[int, dict], base: dict) -> str:
    names = [name for name in results[sizes[0]] if name != "shards"]
    header = f"| {title} | 10 | " + " | ".join(f"{n:,}" for n in sizes) + " | exponent |"
    lines = [header, "|---" * (len(sizes) + 3) + "|"]
    for name in names:
        cells = [f"{base[name][0]:.2f} s"] + [
            f"{results[n][name][0]:.2f} s, {results[n][name][1]:.0f} MB" for n in sizes
        ]
        fitted = exponent(sizes, [results[n][name][0] for n in sizes], base[name][0])
        shown = "—" if math.isnan(fitted) else f"{fitted:.2f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the trees and builds (kept)")
    parser.add_argument("--decoded", type=int, nargs="*", default=[1000, 5000, 20000])
    parser.add_argument("--table-only", type=int, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each quick command (best kept)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(), "date": time.strftime("%Y-%m-%d")}
    for kind, sizes, make, settings in (
        ("decoded", args.decoded, decoded_build, DECODED_SETTINGS),
        ("table-only", args.table_only, table_build, recipe_settings()),
    ):
        if not sizes:
            continue
        results = {}
        for videos in [10, *sizes]:
            print(f"{kind} {videos} videos", flush=True)
            tree, build = make(args.work, videos)
            results[videos] = measure(tree, build, settings, kind == "decoded", args.repeats)
        base = results.pop(10)
        print(table(f"{kind} (wall, peak RSS)", sizes, results, base))
        for videos in sizes:
            if "shards" in results[videos]:
                count, megabytes, rate = results[videos]["shards"]
                print(f"{videos:,} videos: {count} shards, {megabytes:.0f} MB, hashed at {rate:.0f} MB/s")
        report[kind] = {str(n): figures for n, figures in results.items()} | {"10": base}
    print(f"figures: {write_results('scale', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
