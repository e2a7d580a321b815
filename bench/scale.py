"""Growth table (issue 23): each command's wall time and peak RSS (best of --repeats runs of its own `ffx`
process, as a user runs it) as the build grows, and its growth exponent: the least-squares slope of
log(t - t10) over log(videos) where t - t10 >= 0.2 s (t10: on 10 videos; "—" below two sizes). Decoded
builds: bench/scale_tree.py DFDC trees built at first:1, 128-px crops, 4 samples a shard; table-only
builds: bench/scale_tables.py.

    python bench/scale.py --work /tmp/scale [--decoded 1000 5000 20000] [--table-only 12000 120000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import FFX, set_flags
from common.figures import exponent
from common.harness import Bench, process
from common.tables import make_table_only, recipe_settings
from common.trees import make_dfdc

NOISE_FLOOR = 0.2  # seconds: how much a command's best of 3 runs on 10 videos varies
DECODED_SETTINGS = {"sampling": "first:1", "crop.size": 128, "shard.max_count": 4}  # 20 000 videos: 5 000
TRAIN = ["--backbone", "resnet18", "--crop", "64", "--classes-per-batch", "2", "--max-steps", "1"]
TRAIN += ["--device", "cpu", "--workers", "1"]
BUILD = [FFX, "build", "dfdc"]
BENCH = Bench("scale", __doc__, rounds=3, workdir=False)  # --repeats: runs of each quick command, best kept
BENCH.parser.add_argument("--work", type=Path, required=True, help="folder for the trees and builds (kept)")
BENCH.option("--decoded", [1000, 5000, 20000], "sizes of decoded builds", type=int, nargs="*")
BENCH.option("--table-only", [], "sizes of table-only builds", type=int, nargs="*")


def best(name: str, command: list[str], repeats: int = 1) -> tuple[float, float]:
    """The best wall seconds of `repeats` runs of one `ffx` process, and its peak RSS (MB)."""
    timing = min((process(name, command) for _ in range(repeats)), key=lambda timing: timing.seconds)
    return timing.seconds, timing.extra["peak_rss_mb"]


def made(work: Path, kind: str, videos: int) -> tuple[Path, Path, dict]:
    """The tree and the finished build of `videos` videos of `kind` (made once, kept in `work`), and the
    recipe fields it was made with."""
    if kind == "table-only":
        out = work / f"tables-{videos}"
        if not (out / "build" / "build.json").is_file():
            make_table_only(out, videos)
        return out / "tree", out / "build", recipe_settings()
    tree, build = work / f"tree-{videos}", work / f"build-{videos}"
    if not (build / "build.json").is_file():
        make_dfdc(tree, videos)
        command = [*BUILD, "--root", str(tree), "--build", str(build), *set_flags(DECODED_SETTINGS)]
        print(f"  built {videos} videos in {best('build', command)[0]:.0f} s", flush=True)
    best("shard size", [FFX, "shard", str(build), "--shard-size", "4"])  # a build made without the shard size
    return tree, build, DECODED_SETTINGS


def measure(work: Path, kind: str, videos: int, repeats: int) -> dict[str, tuple]:
    """Each command's best wall time of `repeats` and its peak RSS over a build of `kind`."""
    print(f"{kind} {videos} videos", flush=True)
    (tree, build, settings), decoded = made(work, kind, videos), kind == "decoded"
    again = [*BUILD, "--root", str(tree), "--build", str(build), *set_flags(settings)]
    commands = {"index": [FFX, "index", *again[2:]], "status": [FFX, "status", str(build)]}
    commands |= {f"no-op {stage}": [FFX, stage, str(build)] for stage in ("extract", "crop", "shard")}
    commands |= {"no-op build": again, "part 3/4 (no-op build)": [*again, "--part", "3/4"]}
    commands |= {"verify": [FFX, "verify", str(build)]} if decoded else {}
    results = {name: best(name, command, repeats) for name, command in commands.items()}
    return results | (shard_figures(build) if decoded else {})


def shard_figures(build: Path) -> dict[str, tuple]:
    """Export, and train with its shard-check cache cold then warm: the shards hashed at what rate."""
    scratch = build.parent / f"{build.name}.scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "warm").mkdir(parents=True)
    train = [FFX, "train", "--shards", str(build / "shards"), *TRAIN, "--run"]
    export = [FFX, "export", str(build), "--format", "mcx-api", "--out", str(scratch / "lists")]
    results = {"export": best("export", export)}
    results["train, checks cold"] = best("cold", [*train, str(scratch / "cold")])
    shutil.copy(scratch / "cold" / "shard-checks.json", scratch / "warm" / "shard-checks.json")
    results["train, checks warm"] = best("warm", [*train, str(scratch / "warm")])
    shards = json.loads((build / "shards" / "index.json").read_text())["shards"]
    megabytes = sum(entry["bytes"] for entry in shards) / 1e6
    hashing = results["train, checks cold"][0] - results["train, checks warm"][0]
    results["shards"] = (len(shards), megabytes, megabytes / hashing if hashing > 0 else float("nan"))
    shutil.rmtree(scratch)
    return results


def table(kind: str, figures: dict[int, dict]) -> str:
    """A markdown table: each command's time on 10 videos, its time and peak RSS per size, its exponent;
    then, of decoded builds, the shards and how fast train hashed them."""
    base, sizes = figures[10], [n for n in figures if n != 10]
    lines = [f"| {kind} (wall, peak RSS) | 10 | " + " | ".join(f"{n:,}" for n in sizes) + " | exponent |"]
    lines.append("|---" * (len(sizes) + 3) + "|")
    for name in (name for name in base if name != "shards"):
        fitted = exponent({n: figures[n][name][0] for n in sizes}, base[name][0], NOISE_FLOOR)
        cells = " | ".join(f"{figures[n][name][0]:.2f} s, {figures[n][name][1]:.0f} MB" for n in sizes)
        slope = "—" if fitted is None else f"{fitted:.2f}"
        lines.append(f"| {name} | {base[name][0]:.2f} s | {cells} | {slope} |")
    for n in (n for n in sizes if "shards" in figures[n]):
        count, megabytes, rate = figures[n]["shards"]
        lines.append(f"{n:,} videos: {count} shards, {megabytes:.0f} MB, hashed at {rate:.0f} MB/s")
    return "\n".join(lines)


def run(args: argparse.Namespace, _work: Path) -> dict:
    """Per kind of build, each size's figures (10 videos first: every command's own baseline)."""
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d")}
    for kind, sizes in (("decoded", args.decoded), ("table-only", args.table_only)):
        if sizes:
            results[kind] = {videos: measure(args.work, kind, videos, args.rounds) for videos in [10, *sizes]}
            print(table(kind, results[kind]))
    return results


if __name__ == "__main__":
    BENCH.main(run, lambda results: None)  # the tables are printed as each kind is done
