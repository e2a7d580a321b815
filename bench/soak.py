"""Chaos soak (issue 25): an FF++-shaped tree built through `ffx slurm` arrays while faults are
injected at random moments, checked byte for byte against a clean single-process build.

    .venv/bin/python bench/soak.py --work /tmp/soak --videos 1000 --parts 8      # by hand: the docs
    .venv/bin/python bench/soak.py --work /tmp/soak --videos 200 --seed 7 ...   # CI: tests/test_soak.py

Needs the one-node Slurm of `scripts/slurm-cluster.sh up` and root (the soak build lives on a tmpfs
of its own, so that a full disk can be made without filling the machine's). The tree comes from
bench/scale_tree.py. The clean build runs `ffx index ffpp-c23`, `extract`, `crop` and `shard` once.
The soak build runs the same recipe as `ffx slurm` arrays of --parts tasks a stage, submitted round
after round until complete, while a fault is injected every --every seconds on average (seeded), up
to --faults, each kind when it can apply: kill (`scancel --signal=KILL --full` of a running task),
disk-full (the build's file system full for 2-5 s), duplicate (a live stage array submitted again),
shard (a finished shard deleted or a byte flipped), chunk (a ledger chunk truncated to half). It
passes only if the shards are byte-identical to the clean build's, `ffx diff` finds no video that
differs, `ffx verify` is clean and every kind of fault was injected; exit 0 only on a pass.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.scale_tree

from common.harness import RESULTS_DIR

from bench.scale_tree import make_ffpp
from ffx.cluster.slurm import FINAL_STATES, Resources, submit_jobs, wait_for_jobs, write_slurm_jobs
from ffx.pipeline.engine.builddir import BuildDir

KINDS = ("kill", "disk-full", "duplicate", "shard", "chunk")
RECIPE = "ffpp-c23"
FFX = str(Path(sys.executable).with_name("ffx"))


@dataclass
class Fault:
    """One injected fault: its kind, seconds since the soak started, the round, what it hit."""

    kind: str
    at: float
    round: int
    what: str


@dataclass
class Soak:
    """What the soak saw: the faults, the rounds, each round's task states."""

    seed: int
    videos: int
    parts: int
    faults: list[Fault] = field(default_factory=list)
    rounds: int = 0
    task_states: Counter = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)  # job ids of duplicate arrays
    seconds: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def squeue_tasks(job_ids: list[str]) -> dict[str, str]:
    """Task id -> state of the jobs' tasks Slurm knows now."""
    if not job_ids:
        return {}
    command = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i %T"]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env=os.environ | {"LC_ALL": "C"}
    )
    return dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)


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

    def _running(self) -> list[str]:
        ids = [*self.round_jobs.values(), *self.soak.duplicates]
        return sorted(task for task, state in squeue_tasks(ids).items() if state == "RUNNING")

    def _kill(self) -> str:
        running = self._running()
        if not running:
            return ""
        task = self.rng.choice(running)
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
        if not stages:
            return ""
        stage = self.rng.choice(sorted(stages))
        done = subprocess.run(
            ["sbatch", "--parsable", str(self.jobs / f"{stage}.sbatch")], capture_output=True, text=True
        )
        if done.returncode != 0:
            return ""
        job = done.stdout.strip().split(";")[0]
        self.soak.duplicates.append(job)
        return f"{stage} array again as job {job}"

    def _shard(self) -> str:
        shards = sorted(BuildDir(self.build).shards.glob("*.tar"))
        if not shards:
            return ""
        shard = self.rng.choice(shards)
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
        chunks = sorted(self.build.glob("*.parts/part-*/chunk-*.parquet"))
        if not chunks:
            return ""
        chunk = self.rng.choice(chunks)
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
        failed = sorted(task for task, state in states.items() if state != "COMPLETED")
        print(
            f"  round {soak.rounds} ended: {dict(Counter(states.values()))}; failed {failed[:8]}", flush=True
        )
        # A finished build is what a shard fault needs (shards exist only at a round's very end):
        # while faults remain, one is made now and the chain submitted again.
        if complete(build) and not injector.inject(("shard",)):
            return
    raise SystemExit(f"soak: the build is not complete after {max_rounds} rounds")


def check(soak: Soak, clean: Path, build: Path) -> None:
    """The soak build against the clean one: shards, every table (ffx diff), verify."""
    shards = [json.loads((b / "shards" / "index.json").read_text())["shards"] for b in (clean, build)]
    soak.checks["shards byte-identical"] = [(s["name"], s["sha256"]) for s in shards[0]] == [
        (s["name"], s["sha256"]) for s in shards[1]
    ]
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
    passed = all(soak.checks.values())
    verdict = "PASS" if passed else "FAIL"
    print(f"\nsoak: {soak.videos} videos, {soak.parts} parts a stage, seed {soak.seed}: {verdict}")
    print(
        f"  faults injected: {len(soak.faults)} ({dict(Counter(f.kind for f in soak.faults))}); "
        f"survived: {len(soak.faults) if passed else 'not all'}"
    )
    print(
        f"  rounds (submissions of the chain): {soak.rounds}; resubmissions: {soak.rounds - 1}; "
        f"duplicate arrays: {len(soak.duplicates)}; task states: {dict(soak.task_states)}"
    )
    print("  seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in soak.seconds.items()))
    for name, ok in soak.checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for note in soak.notes:
        print(f"  note: {note}")
    result = asdict(soak) | {"passed": passed, "task_states": dict(soak.task_states)}
    path = path or RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  report: {path}")
    return result


def soak_run(args: argparse.Namespace) -> dict:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"soak: seed {seed} (rerun with --seed {seed})", flush=True)
    soak = Soak(seed, args.videos, args.parts)
    work = args.work
    started = time.monotonic()
    tree = make_ffpp(work / "tree", args.videos)
    soak.seconds["tree"] = time.monotonic() - started
    mark = time.monotonic()
    # The clean build runs the commands the arrays run, each once over every video (`ffx build`
    # would crop frames it never stores: another frames table).
    clean = str(work / "clean")
    settings = [item for assignment in args.set for item in ("--set", assignment)]
    ffx("index", RECIPE, "--root", str(tree.root), "--splits", str(tree.splits), "--build", clean, *settings)
    for command in ("extract", "crop", "shard"):
        ffx(command, clean)
    soak.seconds["clean build"] = time.monotonic() - mark
    clean_bytes = sum(path.stat().st_size for path in (work / "clean").rglob("*") if path.is_file())
    megabytes = args.disk_mb or (3 * clean_bytes // 2 >> 20) + 256  # the clean build, and room
    (work / "disk").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(work / "disk")], check=True
    )
    try:
        build = work / "disk" / "build"
        jobs = write_slurm_jobs(
            RECIPE,
            tree.root,
            build,
            work / "jobs",
            splits=tree.splits,
            assignments=args.set,
            tasks={stage: args.parts for stage in ("extract", "crop", "shard")},
            resources=Resources(cpus=1, mem="1G", time="00:30:00"),
        )
        injector = Injector(soak, random.Random(seed), build, work / "jobs", args.every, args.faults)
        injector.start()
        mark = time.monotonic()
        try:
            run_rounds(soak, injector, jobs, args.max_rounds, args.timeout)
        finally:
            injector.stop.set()
            subprocess.run(["scancel", *soak.duplicates], check=False)
        soak.seconds["soak build"] = time.monotonic() - mark
        check(soak, work / "clean", build)
    finally:
        subprocess.run(["umount", "--lazy", str(work / "disk")], check=False)
    soak.seconds["total"] = time.monotonic() - started
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
