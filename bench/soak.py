"""Chaos soak (issue 25): an FF++-shaped tree built through `ffx slurm` arrays while faults are
injected at random moments, checked byte for byte against a clean single-process build.

    .venv/bin/python bench/soak.py --work /tmp/soak --videos 1000 --parts 8      # by hand: the docs
    .venv/bin/python bench/soak.py --work /tmp/soak --videos 200 --seed 7 ...   # CI: tests/test_soak.py

Needs the one-node Slurm of `scripts/slurm-cluster.sh up` and root (the soak build lives on a tmpfs
of its own, so that a full disk can be made without filling the machine's). The tree comes from
bench/common/trees.py. The clean build runs `ffx index ffpp-c23`, `extract`, `crop` and `shard` once;
the soak build runs them as arrays of --parts tasks, submitted round after round until complete, while
a fault of each kind (Injector: kill, disk-full, duplicate, shard, chunk; docs/slurm.md) is injected
every --every seconds on average (seeded), up to --faults. It passes only if the shards are
byte-identical, `ffx diff` finds no video that differs, `ffx verify` is clean and every kind of fault
was injected; exit 0 only on a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import FFX, set_flags, tree_bytes
from common.figures import timed
from common.harness import RESULTS_DIR
from common.soak import KINDS, Fault, Soak, summary, task_states
from common.trees import Tree, make_ffpp

from ffx.cluster.slurm import FINAL_STATES, Resources, submit_jobs, wait_for_jobs, write_slurm_jobs
from ffx.pipeline.engine.builddir import BuildDir

RECIPE, STAGES = "ffpp-c23", ("extract", "crop", "shard")  # the stages after the index


def squeue_tasks(job_ids: list[str]) -> dict[str, str]:
    """Task id -> state of the jobs' tasks Slurm knows now."""
    if not job_ids:
        return {}
    command = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i %T"]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"LC_ALL": "C"})
    return task_states(done.stdout)


class Injector(threading.Thread):
    """Injects faults while `active` is set, until `limit` faults; records each in `soak`."""

    def __init__(self, soak: Soak, rng: random.Random, build: Path, jobs: Path, every: float, limit: int):
        super().__init__(daemon=True)
        self.soak, self.rng, self.build, self.jobs = soak, rng, build, jobs
        self.every, self.limit = every, limit
        self.active, self.stop = threading.Event(), threading.Event()
        self.round_jobs: dict[str, str] = {}  # stage -> job id of the round's chain
        self.started = time.monotonic()
        self.order: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.soak.faults) < self.limit:
            if self.stop.wait(self.rng.expovariate(1.0 / self.every)):
                return
            if self.active.is_set():
                self.inject(KINDS)

    def inject(self, kinds: tuple[str, ...]) -> bool:
        """Inject the next fault of the seeded order among `kinds` that can apply now."""
        with self.lock:
            if len(self.soak.faults) >= self.limit:
                return False
            if not self.order:
                self.order = list(KINDS)
                self.rng.shuffle(self.order)
            for kind in [kind for kind in self.order if kind in kinds]:
                try:
                    what = getattr(self, "_" + kind.replace("-", "_"))()
                except OSError as error:  # the fault could not be made (not ffx's doing)
                    self.soak.notes.append(f"{kind} not injected: {error}")
                    continue
                if what:
                    self.order.remove(kind)
                    fault = Fault(kind, round(time.monotonic() - self.started, 1), self.soak.rounds, what)
                    self.soak.faults.append(fault)
                    print(f"  fault {len(self.soak.faults)} at {fault.at:.1f} s: {kind}: {what}", flush=True)
                    return True
            return False

    def _pick(self, choices: Iterable[Any]) -> Any:
        """One of `choices` (sorted, so that the seed decides), None without any."""
        choices = sorted(choices)
        return self.rng.choice(choices) if choices else None

    def _running(self) -> list[str]:
        ids = [*self.round_jobs.values(), *self.soak.duplicates]
        return [task for task, state in squeue_tasks(ids).items() if state == "RUNNING"]

    def _kill(self) -> str:
        if (task := self._pick(self._running())) is None:
            return ""
        done = subprocess.run(["scancel", "--signal=KILL", "--full", task], capture_output=True, check=False)
        return f"task {task}" if done.returncode == 0 else ""  # it ended just before

    def _disk_full(self) -> str:
        filler = self.build.parent / ".filler"
        written = 0
        try:
            with open(filler, "wb", buffering=0) as out:
                for size in (1 << 20, 4096, 1):  # to the last byte
                    block = b"\0" * size
                    try:
                        while True:
                            written += out.write(block)
                    except OSError:
                        pass
            held = self.rng.uniform(2.0, 5.0)
            time.sleep(held)
        finally:
            filler.unlink(missing_ok=True)
        return f"{written >> 20} MB filled for {held:.1f} s"

    def _duplicate(self) -> str:
        states = squeue_tasks(list(self.round_jobs.values()))
        live = {task.split("_")[0] for task, state in states.items() if state in ("RUNNING", "PENDING")}
        stages = [stage for stage, job in self.round_jobs.items() if job in live and stage != "index"]
        if (stage := self._pick(stages)) is None:
            return ""
        done = subprocess.run(
            ["sbatch", "--parsable", str(self.jobs / f"{stage}.sbatch")], capture_output=True, text=True
        )
        if done.returncode != 0:
            return ""
        job = done.stdout.strip().split(";")[0]
        self.soak.duplicates.append(job)
        return f"{stage} array again as job {job}"

    def _shard(self) -> str:
        if (shard := self._pick(BuildDir(self.build).shards.glob("*.tar"))) is None:
            return ""
        try:
            if self.rng.random() < 0.5:
                shard.unlink()
                return f"{shard.name} deleted"
            data = bytearray(shard.read_bytes())
            place = self.rng.randrange(len(data))
            data[place] ^= 0xFF
            shard.write_bytes(bytes(data))
        except OSError as error:  # a run replaced it meanwhile, or the disk is full
            return f"{shard.name}: {error.strerror}" if error.errno else ""
        return f"{shard.name}: byte {place} flipped"

    def _chunk(self) -> str:
        if (chunk := self._pick(self.build.glob("*.parts/part-*/chunk-*.parquet"))) is None:
            return ""
        try:
            size = chunk.stat().st_size
            os.truncate(chunk, size // 2)
        except OSError:
            return ""  # merged meanwhile
        return f"{chunk.relative_to(self.build)} truncated to {size // 2} of {size} bytes"


def ffx(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([FFX, *arguments], capture_output=True, text=True, check=check)


def complete(build: Path) -> bool:
    """Whether the build is finished: every stage current and the shards laid out (a fresh
    process, as a user's `ffx status` would be)."""
    script = (
        "import sys; from ffx.pipeline.stages.status import build_status\n"
        "statuses = build_status(sys.argv[1])\n"
        "ok = all(s.currency is None or s.currency.ok for s in statuses) and statuses[-1].stage == 'shards'\n"
        "sys.exit(0 if ok else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(build)], capture_output=True, check=False)
    return done.returncode == 0


def run_rounds(soak: Soak, injector: Injector, jobs, max_rounds: int, timeout: float) -> None:
    """Submit the chain round after round until the build is complete."""
    build = injector.build
    while soak.rounds < max_rounds:
        soak.rounds += 1
        ids = submit_jobs(jobs)
        injector.round_jobs = ids
        injector.active.set()
        print(f"round {soak.rounds}: jobs {', '.join(f'{s} {j}' for s, j in ids.items())}", flush=True)
        states = wait_for_jobs(ids, timeout=timeout)
        # Duplicates may still run: the round ends when they do too.
        while any(state not in FINAL_STATES for state in squeue_tasks(soak.duplicates).values()):
            time.sleep(1)
        injector.active.clear()
        soak.task_states.update(states.values())
        failed = sorted(task for task, state in states.items() if state != "COMPLETED")[:8]
        print(f"  round {soak.rounds} ended: {dict(Counter(states.values()))}; failed {failed}", flush=True)
        # A finished build is what a shard fault needs (shards exist only at a round's very end):
        # while faults remain, one is made now and the chain submitted again.
        if complete(build) and not injector.inject(("shard",)):
            return
    raise SystemExit(f"soak: the build is not complete after {max_rounds} rounds")


def check(soak: Soak, clean: Path, build: Path) -> None:
    """The soak build against the clean one: shards, every table (ffx diff), verify."""
    indexes = [json.loads((b / "shards" / "index.json").read_text())["shards"] for b in (clean, build)]
    clean_shards, shards = ([(s["name"], s["sha256"]) for s in index] for index in indexes)
    soak.checks["shards byte-identical"] = clean_shards == shards
    diff = ffx("diff", str(clean), str(build), "--json", check=False)
    found = json.loads(diff.stdout)
    differing = {stage["stage"]: stage["differ"] for stage in found["stages"] if stage["differ"]}
    soak.checks["every video once, current, identical (ffx diff)"] = diff.returncode == 0 and not differing
    if differing:
        soak.notes.append(f"ffx diff: {differing}")
    videos = {stage["stage"]: stage["videos"] for stage in found["stages"]}
    soak.checks["every table holds every video"] = set(videos.values()) == {soak.videos}
    soak.checks["ffx verify clean"] = ffx("verify", str(build), check=False).returncode == 0
    soak.checks["every kind of fault injected"] = {fault.kind for fault in soak.faults} == set(KINDS)


def report(soak: Soak, path: Path | None) -> dict:
    """Print the report and write it as JSON (by default bench/results/soak-TIMESTAMP.json)."""
    print("\n".join(summary(soak)))
    result = asdict(soak) | {"passed": all(soak.checks.values()), "task_states": dict(soak.task_states)}
    path = path or RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  report: {path}")
    return result


def soak_build(soak: Soak, args: argparse.Namespace, tree: Tree, seed: int) -> None:
    """The soak build on a tmpfs of its own, under faults, then checked against the clean build."""
    work, disk = args.work, args.work / "disk"
    megabytes = (
        args.disk_mb or (3 * tree_bytes(work / "clean")[1] // 2 >> 20) + 256
    )  # the clean build, and room
    disk.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(disk)], check=True)
    try:
        jobs = write_slurm_jobs(RECIPE, tree.root, disk / "build", work / "jobs", splits=tree.splits,
                                assignments=args.set, tasks=dict.fromkeys(STAGES, args.parts),
                                resources=Resources(cpus=1, mem="1G", time="00:30:00"))  # fmt: skip
        injector = Injector(soak, random.Random(seed), disk / "build", work / "jobs", args.every, args.faults)
        injector.start()
        with timed(soak.seconds, "soak build"):
            try:
                run_rounds(soak, injector, jobs, args.max_rounds, args.timeout)
            finally:
                injector.stop.set()
                subprocess.run(["scancel", *soak.duplicates], check=False)
        check(soak, work / "clean", disk / "build")
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


def soak_run(args: argparse.Namespace) -> dict:
    """The tree, the clean build, the soak build, the report."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"soak: seed {seed} (rerun with --seed {seed})", flush=True)
    soak, clean = Soak(seed, args.videos, args.parts), str(args.work / "clean")
    with timed(soak.seconds, "total"):
        with timed(soak.seconds, "tree"):
            tree = make_ffpp(args.work / "tree", args.videos)
        # The clean build runs the commands the arrays run, each once over every video (`ffx build`
        # would crop frames it never stores: another frames table).
        with timed(soak.seconds, "clean build"):
            where = ["--root", str(tree.root), "--splits", str(tree.splits), "--build", clean]
            ffx("index", RECIPE, *where, *set_flags(args.set))
            for stage in STAGES:
                ffx(stage, clean)
        soak_build(soak, args, tree, seed)
    return report(soak, args.results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--parts", type=int, default=8, help="array tasks per stage")
    parser.add_argument("--seed", type=int, help="the faults' seed (default: a new one, printed)")
    parser.add_argument("--faults", type=int, default=15, help="faults to inject at most")
    parser.add_argument("--every", type=float, default=10.0, help="mean seconds between faults")
    parser.add_argument("--max-rounds", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a round may take")
    parser.add_argument("--disk-mb", type=int, help="the build's tmpfs (default: 1.5x the clean build + 256)")
    parser.add_argument("--set", action="append", default=[], help="field=value for both builds")
    parser.add_argument("--results", type=Path, help="the report's JSON (default: bench/results/soak-*.json)")
    parser.add_argument("--work", type=Path, required=True, help="an empty folder for the tree and builds")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the soak build lives on a tmpfs of its own (the disk-full fault)")
    if shutil.which("sbatch") is None:
        parser.error("no sbatch: bring up the test cluster with `bash scripts/slurm-cluster.sh up`")
    args.work.mkdir(parents=True, exist_ok=True)
    if any(args.work.iterdir()):
        parser.error(f"{args.work} is not empty")
    return 0 if soak_run(args)["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
