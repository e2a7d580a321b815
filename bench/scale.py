"""Growth table (issue 23): every command's wall time and peak RSS as the build grows, each run as a
user runs it (its own `ffx` process), with its growth exponent: the least-squares slope of log(t - t10)
over log(videos) where t - t10 >= 0.2 s (t10: the command on 10 videos; "—" below two sizes). Decoded
builds: bench/scale_tree.py DFDC trees, `ffx build dfdc` at first:1, 128-px crops, 4 samples a shard;
table-only builds: bench/scale_tables.py. Best of --repeats runs; peak RSS of the `ffx` process alone.

    python bench/scale.py --work /tmp/scale                      # decoded 10, 1 000, 5 000, 20 000
    python bench/scale.py --work /tmp/scale --table-only 12000 120000
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

from common import FFX, REPO, environment
from common.harness import process, write_results

sys.path.insert(0, str(REPO))  # bench.scale_tree, bench.scale_tables, ahead of any installed `bench`
from bench.scale_tables import make_table_only, recipe_settings
from bench.scale_tree import make_dfdc

NOISE_FLOOR = 0.2  # seconds: how much a command's best of 3 runs on 10 videos varies
DECODED_SETTINGS = {"sampling": "first:1", "crop.size": 128, "shard.max_count": 4}  # 20 000 videos: 5 000
TRAIN = ["--backbone", "resnet18", "--crop", "64", "--classes-per-batch", "2", "--max-steps", "1"]


def flags(settings: dict) -> list[str]:
    return [flag for name, value in settings.items() for flag in ("--set", f"{name}={value}")]


def best(name: str, command: list[str], repeats: int = 1) -> tuple[float, float]:
    """The best wall seconds of `repeats` runs of one `ffx` process, and its peak RSS (MB)."""
    timing = min((process(name, command) for _ in range(repeats)), key=lambda timing: timing.seconds)
    return timing.seconds, timing.extra["peak_rss_mb"]


def decoded_build(work: Path, videos: int) -> tuple[Path, Path]:
    """The tree and the finished build of `videos` videos (made once, kept in `work`)."""
    tree, build = work / f"tree-{videos}", work / f"build-{videos}"
    if not (build / "build.json").is_file():
        make_dfdc(tree, videos)
        command = [FFX, "build", "dfdc", "--root", str(tree), "--build", str(build), *flags(DECODED_SETTINGS)]
        print(f"  built {videos} videos in {best('build', command)[0]:.0f} s", flush=True)
    best("shard size", [FFX, "shard", str(build), "--shard-size", "4"])  # a build made without the shard size
    return tree, build


def table_build(work: Path, videos: int) -> tuple[Path, Path]:
    out = work / f"tables-{videos}"
    if not (out / "build" / "build.json").is_file():
        make_table_only(out, videos)
    return out / "tree", out / "build"


def measure(tree: Path, build: Path, settings: dict, decoded: bool, repeats: int) -> dict[str, tuple]:
    """Each command's best wall time of `repeats` and its peak RSS."""
    again = [FFX, "build", "dfdc", "--root", str(tree), "--build", str(build), *flags(settings)]
    commands = {"index": [FFX, "index", *again[2:]], "status": [FFX, "status", str(build)]}
    commands |= {f"no-op {stage}": [FFX, stage, str(build)] for stage in ("extract", "crop", "shard")}
    commands |= {"no-op build": again, "part 3/4 (no-op build)": [*again, "--part", "3/4"]}
    commands |= {"verify": [FFX, "verify", str(build)]} if decoded else {}
    train = [
        FFX,
        "train",
        "--shards",
        str(build / "shards"),
        *TRAIN,
        "--device",
        "cpu",
        "--workers",
        "1",
        "--run",
    ]
    results = {name: best(name, command, repeats) for name, command in commands.items()}
    if decoded:  # export, and train with its shard-check cache cold then warm
        scratch = build.parent / f"{build.name}.scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / "warm").mkdir(parents=True)
        export = [FFX, "export", str(build), "--format", "mcx-api", "--out", str(scratch / "lists")]
        results["export"] = best("export", export)
        results["train, checks cold"] = best("cold", [*train, str(scratch / "cold")])
        shutil.copy(scratch / "cold" / "shard-checks.json", scratch / "warm" / "shard-checks.json")
        results["train, checks warm"] = best("warm", [*train, str(scratch / "warm")])
        shards = json.loads((build / "shards" / "index.json").read_text())["shards"]
        megabytes = sum(entry["bytes"] for entry in shards) / 1e6
        hashing = results["train, checks cold"][0] - results["train, checks warm"][0]
        results["shards"] = (len(shards), megabytes, megabytes / hashing if hashing > 0 else float("nan"))
        shutil.rmtree(scratch)
    return results


def exponent(sizes: list[int], seconds: list[float], base: float) -> float:
    """The slope of log(t - base) over log(videos) where t - base >= NOISE_FLOOR (nan: under 2 sizes)."""
    points = [(math.log(n), math.log(t - base)) for n, t in zip(sizes, seconds) if t - base >= NOISE_FLOOR]
    if len(points) < 2:
        return float("nan")
    mean_x, mean_y = (sum(p[i] for p in points) / len(points) for i in (0, 1))
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def table(title: str, sizes: list[int], results: dict[int, dict], base: dict) -> str:
    lines = [
        f"| {title} | 10 | " + " | ".join(f"{n:,}" for n in sizes) + " | exponent |",
        "|---" * (len(sizes) + 3) + "|",
    ]
    for name in (name for name in results[sizes[0]] if name != "shards"):
        cells = [f"{base[name][0]:.2f} s"] + [
            f"{results[n][name][0]:.2f} s, {results[n][name][1]:.0f} MB" for n in sizes
        ]
        fitted = exponent(sizes, [results[n][name][0] for n in sizes], base[name][0])
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {'—' if math.isnan(fitted) else f'{fitted:.2f}'} |"
        )
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
    kinds = [("decoded", args.decoded, decoded_build, DECODED_SETTINGS)]
    kinds.append(("table-only", args.table_only, table_build, recipe_settings()))
    for kind, sizes, make, settings in kinds:
        results = {}
        for videos in [10, *sizes] if sizes else []:
            print(f"{kind} {videos} videos", flush=True)
            results[videos] = measure(*make(args.work, videos), settings, kind == "decoded", args.repeats)
        if not results:
            continue
        base = results.pop(10)
        print(table(f"{kind} (wall, peak RSS)", sizes, results, base))
        for videos in (videos for videos in sizes if "shards" in results[videos]):
            count, megabytes, rate = results[videos]["shards"]
            print(f"{videos:,} videos: {count} shards, {megabytes:.0f} MB, hashed at {rate:.0f} MB/s")
        report[kind] = {str(n): figures for n, figures in results.items()} | {"10": base}
    print(f"figures: {write_results('scale', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
