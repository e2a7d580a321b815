"""The Slurm recipe of the docs (docs/slurm.md) on a real Slurm: the demo build as 3-task
arrays per stage and a 2-process gloo training, submitted with `ffx slurm --submit`, checked
against a single-process build. Needs a cluster (`bash scripts/slurm-cluster.sh up`); without
`sbatch` it is skipped, except under CI=true, where a missing cluster is a failure."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from ffx.cli import main
from ffx.cluster.slurm import Resources, Training, parse_tasks, submit_jobs, wait_for_jobs, write_slurm_jobs
from ffx.demo import make_demo_data
from ffx.errors import FfxError
from ffx.model.checkpoint import load_model
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.status import build_status
from tests.assertions import require_cluster
from tests.conftest import REPO

SLURM_PAGE = REPO / "docs" / "slurm.md"
TASKS = 3
ARRAYS = ("extract", "crop", "shard")
# The docs' command, folders apart: 3 one-core tasks a stage, then 2 gloo processes training a
# tiny timm test network for 2 steps (the check is the recipe, not the detector).
OPTIONS = [
    *("--tasks", str(TASKS), "--cpus", "1", "--mem", "2G", "--time", "00:10:00"),
    *("--procs-per-node", "2", "--train-cpus", "2", "--train-mem", "4G", "--train-time", "00:10:00"),
    "--train-args",
    "--backbone test_convnext --crop 32 --epochs 1 --steps-per-epoch 2 --classes-per-batch 2 "
    "--images-per-class 4 --workers 1 --device cpu",
    "--submit",
]
VIDEOS = 24  # the demo's clips: ffx.demo.DEMO_VIDEOS
TIMEOUT = 300  # seconds for every job; about 100 on 2 cores


def _command(data: str, build: str, out: str, run: str) -> list[str]:
    return ["slurm", "demo", "--root", data, "--build", build, "--out", out, "--run", run, *OPTIONS]


def _submit_and_wait(command: list[str], capsys) -> tuple[dict[str, str], dict[str, str]]:
    """Run `ffx slurm … --submit`; every task's final state and the job ids it printed."""
    capsys.readouterr()
    assert main(command) == 0
    said = capsys.readouterr().out
    submitted = re.search(r"submitted: (.*)", said)
    assert submitted, said
    ids = dict(item.split(" ") for item in submitted.group(1).split(", "))
    assert list(ids) == ["index", "extract", "crop", "shard", "train"]
    try:
        return wait_for_jobs(ids, timeout=TIMEOUT), ids
    finally:  # nothing left queued or running after a failure or a timeout
        subprocess.run(["scancel", *ids.values()], check=False)


def _digests(shards: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(shards.glob("*.tar"))}


def test_the_docs_run_this_command() -> None:
    """The docs' Slurm page shows the command this file submits, option for option."""
    section = SLURM_PAGE.read_text(encoding="utf-8")
    docs_command = "ffx " + shlex.join(
        _command("slurm-demo/data", "slurm-demo/build", "slurm-demo/jobs", "slurm-demo/run")
    )
    assert docs_command in section.replace("\\\n  ", "")


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_build_and_training_through_slurm(tmp_path: Path, capsys) -> None:
    require_cluster()
    data = make_demo_data(tmp_path / "data")
    reference = run_build(load_manifest("demo"), data, tmp_path / "reference", show_progress=False)
    assert not reference.waiting
    # Folders with spaces: the scripts quote them (#SBATCH lines included).
    build, jobs, run = tmp_path / "the build", tmp_path / "slurm jobs", tmp_path / "run"

    states, ids = _submit_and_wait(_command(str(data), str(build), str(jobs), str(run)), capsys)
    expected = {ids["index"], ids["train"]} | {
        f"{ids[stage]}_{task}" for stage in ARRAYS for task in range(TASKS)
    }
    assert states == dict.fromkeys(expected, "COMPLETED"), states

    # Every task's log, and the parts: 3 tasks a stage that share out the 24 videos, one merging.
    logs = jobs / "logs"
    arrays = [f"{stage}-{ids[stage]}_{task}.out" for stage in ARRAYS for task in range(TASKS)]
    names = sorted(path.name for path in logs.iterdir())
    assert names == sorted([f"index-{ids['index']}.out", f"train-{ids['train']}.out", *arrays])
    for stage in ARRAYS:
        texts = [(logs / f"{stage}-{ids[stage]}_{task}.out").read_text() for task in range(TASKS)]
        parts = [int(re.search(r"(\d+) videos in this part", text).group(1)) for text in texts]
        assert parts == [VIDEOS // TASKS] * TASKS
        assert sum("table not merged yet" not in text for text in texts) == 1  # the last task merged
    assert "indexed 24 videos" in (logs / f"index-{ids['index']}.out").read_text()

    # The shards are the single-process build's, byte for byte.
    slurm_shards, single_shards = _digests(build / "shards"), _digests(reference.build / "shards")
    assert len(slurm_shards) == 5 and slurm_shards == single_shards
    index = json.loads((build / "shards" / "index.json").read_text())
    assert index == json.loads((reference.build / "shards" / "index.json").read_text())

    # `ffx status`: every stage merged, current and ok for every video; the shards in place.
    statuses = {stage.stage: stage for stage in build_status(build)}
    assert list(statuses) == ["index", "frames", "faces", "samples", "shards"]
    for name in ("frames", "faces", "samples"):
        stage = statuses[name]
        assert stage.merged and stage.currency.ok and stage.items == {"ok": VIDEOS}, (name, stage)
    assert statuses["shards"].items == {"in place": 5}
    assert main(["status", str(build)]) == 0

    # Training: two ranks (a random state each), rank 0 alone reports, the checkpoint loads.
    train_log = (logs / f"train-{ids['train']}.out").read_text()
    assert train_log.count("train: step 2 of 2") == 1, train_log[-2000:]
    assert sorted(path.name for path in run.glob("last.rng-*.pt")) == ["last.rng-0.pt", "last.rng-1.pt"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2]
    model = load_model(run / "last.safetensors")
    assert model.config.backbone == "test_convnext"

    # Task 1 submitted alone (as after a failure) still does part 1 of 3, and finds it done.
    again = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--array=1", str(jobs / "extract.sbatch")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    rerun = (logs / f"extract-{again.stdout.strip().split(';')[0]}_1.out").read_text()
    assert f"{VIDEOS // TASKS} videos in this part, {VIDEOS // TASKS} already current" in rerun


@pytest.mark.slurm
def test_a_failed_stage_cancels_the_jobs_after_it(tmp_path: Path, capsys) -> None:
    """The index of a missing dataset fails; the arrays and the training behind it are cancelled
    (--kill-on-invalid-dep) instead of pending forever."""
    require_cluster()
    missing = tmp_path / "no-such-data"
    command = _command(str(missing), str(tmp_path / "build"), str(tmp_path / "jobs"), str(tmp_path / "run"))
    states, ids = _submit_and_wait(command, capsys)
    assert states.pop(ids["index"]) == "FAILED"
    assert {task.split("_")[0] for task in states} == {
        ids[name] for name in ("extract", "crop", "shard", "train")
    }
    assert set(states.values()) == {"CANCELLED"}, states
    log = (tmp_path / "jobs" / "logs" / f"index-{ids['index']}.out").read_text()
    assert "ffx: error:" in log and str(missing) in log, log
    assert not (tmp_path / "build" / "frames.parquet").exists()


@pytest.mark.slurm
def test_a_lock_is_taken_over_once_its_holders_job_has_left_the_queue(tmp_path: Path, monkeypatch) -> None:
    """A lock of another node's run, its heartbeat fresh: respected while that run's Slurm job is
    in the queue, taken over once the job is cancelled (its processes went with it)."""
    require_cluster()
    from ffx.pipeline.engine import lock

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(lock, "SQUEUE_SECONDS", 0.0)  # ask squeue every time
    job = (
        subprocess.run(
            ["sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 300"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    path = tmp_path / ".locks" / "faces.merge.lock"
    path.parent.mkdir()
    holder = {"host": "node-7", "pid": 4242, "slurm_job": job, "started": 0.0}
    path.write_text(json.dumps(holder), encoding="utf-8")
    beat = time.time() - 3 * lock.HEARTBEAT_SECONDS  # it has missed heartbeats: squeue is asked
    os.utime(path, (beat, beat))
    try:
        with lock.exclusive(path) as held:
            assert not held  # pending or running: its holder may be alive
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 60
    while not (taken := _try_lock(lock, path)) and time.monotonic() < deadline:
        time.sleep(1)
    assert taken and not path.exists()


def _try_lock(lock, path: Path) -> bool:
    with lock.exclusive(path) as held:
        return held


FAKE_SBATCH = """#!/bin/bash
# Records its arguments and answers like `sbatch --parsable` on a federation (ID;CLUSTER).
echo "$*" >> "$(dirname "$0")/calls"
count=$(wc -l < "$(dirname "$0")/calls")
echo "$((100 + count));ffx"
"""


def test_scripts_parts_and_chain_without_a_cluster(tmp_path: Path, monkeypatch) -> None:
    """What the scripts ask for, the part count written into each array (a task resubmitted
    alone keeps it), and submit.sh chaining each job on the one before; sbatch is a stand-in."""
    jobs = write_slurm_jobs(
        "demo",
        tmp_path / "data",
        tmp_path / "build",
        tmp_path / "my jobs",
        assignments=["seed=3"],
        tasks=parse_tasks("extract=4,crop=2,shard=3"),
        resources=Resources(cpus=2, mem="3G", time="1-00:00:00"),
        stage_resources={"crop": Resources(cpus=2, mem="3G", time="1-00:00:00", gres="gpu:1")},
        training=Training(run=tmp_path / "run", args=("--epochs", "2"), nodes=2, procs_per_node=4),
        partition="gpu",
    )
    assert list(jobs.scripts) == ["index", "extract", "crop", "shard", "train"]
    text = {name: path.read_text() for name, path in jobs.scripts.items()}
    for name, count in (("extract", 4), ("crop", 2), ("shard", 3)):
        assert f"#SBATCH --array=0-{count - 1}\n" in text[name]
        root = f" --root {tmp_path / 'data'}" if name in ("extract", "crop") else ""  # they read videos
        assert f'{name} {tmp_path / "build"}{root} --part "$SLURM_ARRAY_TASK_ID/{count}"' in text[name]
        assert f'#SBATCH --output="{jobs.logs}/{name}-%A_%a.out"\n' in text[name]
    assert all(
        "#SBATCH --partition=gpu\n" in script and "#SBATCH --no-requeue\n" in script
        for script in text.values()
    )
    assert [name for name in text if "--gres=gpu:1" in text[name]] == ["crop"]
    assert "--set seed=3" in text["index"] and "#SBATCH --mem=3G\n" in text["index"]
    assert "#SBATCH --nodes=2\n" in text["train"] and "--nproc-per-node=4" in text["train"]
    assert "--rdzv-backend=c10d" in text["train"] and "--epochs 2" in text["train"]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ids = submit_jobs(jobs)
    assert ids == {"index": "101", "extract": "102", "crop": "103", "shard": "104", "train": "105"}
    calls = (bin_dir / "calls").read_text().splitlines()
    assert calls[0] == "--parsable index.sbatch"
    assert calls[1:] == [
        f"--parsable --dependency=afterok:{previous} --kill-on-invalid-dep=yes {name}.sbatch"
        for previous, name in zip(range(101, 105), ["extract", "crop", "shard", "train"])
    ]
    logs = [path.name for path in jobs.task_logs(ids)]
    assert len(logs) == 1 + 4 + 2 + 3 + 1 and "crop-103_1.out" in logs and "train-105.out" in logs


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_tasks("extract=0"), "extract needs at least 1 task"),
        (lambda: parse_tasks("index=2"), "expected N, or STAGE=N items"),
        (
            lambda: write_slurm_jobs(
                "demo", Path("d"), Path("b"), Path("o"), resources=Resources(mem="8 GB")
            ),
            "memory '8 GB' is not Slurm's form",
        ),
        (
            lambda: write_slurm_jobs("demo", Path("d"), Path("b"), Path("o"), resources=Resources(time="4h")),
            "time '4h' is not Slurm's form",
        ),
        (
            lambda: write_slurm_jobs(
                "demo", Path("d"), Path("b"), Path("o"), training=Training(run=Path("r"), args=("--run=x",))
            ),
            "--run is set by `ffx slurm`",
        ),
    ],
)
def test_settings_sbatch_would_refuse_are_one_line(call, message: str) -> None:
    with pytest.raises(FfxError, match=re.escape(message)):
        call()
