"""Assertions the tests share: an error told in one line, never a traceback; what a build's faces
and crops are, to compare two builds; a lock contested by several runs at once; an AUC counted pair
by pair; a Slurm cluster that takes jobs."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ffx.pipeline.engine import lock
from ffx.pipeline.engine.lock import exclusive
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.stages.shard import run_shard
from tests.generated import write_holder


def help_text(*command: str) -> str:
    """What `ffx COMMAND --help` prints, in a terminal wide enough that no option wraps."""
    done = subprocess.run(
        [sys.executable, "-m", "ffx.cli", *command, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "300"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def error_line(text: str) -> str:
    """The one line of an error output (stderr of the CLI or of a subprocess), no traceback."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def one_error_line(capture) -> str:
    """The one line on stderr so far (capsys, or capfd: OpenCV and loader workers write at the
    descriptor), no traceback."""
    return error_line(capture.readouterr().err)


def fails_in_one_line(arguments: list[str], capture) -> str:
    """`ffx ARGUMENTS` exits 1 with a single `ffx: error:` line on stderr: that line."""
    from ffx.cli import main

    assert main(arguments) == 1
    line = one_error_line(capture)
    assert line.startswith("ffx: error:"), line
    return line


def faces_by_key(build: Path) -> dict[str, list[dict]]:
    """The rows of faces.parquet, by video key."""
    grouped: dict[str, list[dict]] = {}
    for row in pq.read_table(build / "faces.parquet").to_pylist():
        grouped.setdefault(row["key"], []).append(row)
    return grouped


def crops_digest(build: Path) -> dict[str, str]:
    """The sha256 of every crop PNG and of faces.parquet, by path in the build."""
    files = [*sorted(build.glob("faces/**/*.png")), build / "faces.parquet"]
    return {str(path.relative_to(build)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def kill_mid_run(script: str, arguments: list[str], build: Path, stage: str, chunks: int, seconds: float):
    """Run `python -c script ARGUMENTS` in a session of its own and kill -9 it and its workers once
    `chunks` ledger chunks of `stage` are written under `build`; its table must not be merged yet."""
    process = subprocess.Popen([sys.executable, "-c", script, *arguments], start_new_session=True)
    deadline = time.monotonic() + seconds
    while len(list(build.glob(f"{stage}.parts/*/chunk-*.parquet"))) < chunks and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the main process and its workers, mid-run
    process.wait()
    assert not (build / f"{stage}.parquet").exists(), "the run finished before it could be killed"


def _try_once(path: str, barrier, results) -> None:
    barrier.wait()
    with exclusive(Path(path)) as held:
        results.append(held)
        time.sleep(0.5)  # still held while the others try


def contest_a_stale_lock(path: Path) -> None:
    """Four runs at once try a lock another host left 10 minutes ago: exactly one holds it."""
    write_holder(path, "node-7", age_seconds=lock.STALE_SECONDS + 60)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results, barrier = manager.list(), manager.Barrier(4)
        runs = [context.Process(target=_try_once, args=(str(path), barrier, results)) for _ in range(4)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(60)
        assert sorted(results) == [False, False, False, True]
    assert not path.exists()  # released by its one holder


def _shard_part(build: str, index: int, barrier) -> None:
    barrier.wait()  # both parts start (and so finish) together
    run_shard(Path(build), part=Part(index, 2), workers=1, show_progress=False)


def shard_two_parts_at_once(build: Path, context) -> None:
    """Two `ffx shard` parts started together: both succeed, and whichever merged, a rerun finds
    everything current."""
    barrier = context.Barrier(2)
    runs = [context.Process(target=_shard_part, args=(str(build), index, barrier)) for index in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(180)
    assert [run.exitcode for run in runs] == [0, 0]
    report = run_shard(build, workers=1, show_progress=False)
    assert report.done_now == 0 and report.merged


def pair_auc(labels, scores) -> float:
    """P(a fake scores above a real), ties half: every (fake, real) pair counted."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    fake, real = scores[labels][:, None], scores[~labels][None, :]
    return float(((fake > real) + 0.5 * (fake == real)).mean())


def require_cluster() -> None:
    """Skip without a Slurm that takes jobs, saying why; under CI=true that is a failure."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "no sbatch on PATH: bring up a test cluster with `bash scripts/slurm-cluster.sh up` (root)"
    else:
        done = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, check=False, timeout=30
        )
        states = done.stdout.split()
        if done.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states):
            said = done.stderr.strip() or f"node states {states}"
            reason = f"Slurm does not take jobs ({said}): run `bash scripts/slurm-cluster.sh up`"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
