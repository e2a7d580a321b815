"""Issue 24: locks on shared build state are lock files, never flock (missing on Lustre mounted
without it, node-local on NFS); a holder that is provably gone is taken over by exactly one run."""

from __future__ import annotations

import ast
import errno
import fcntl
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffx.errors import BuildError
from ffx.pipeline.engine import lock
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.lock import exclusive, hold_lock
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.stages.shard import run_shard
from tests.assertions import contest_a_stale_lock, shard_two_parts_at_once
from tests.conftest import REPO
from tests.generated import make_cropped_build, write_holder

PACKAGE = REPO / "ffx"


def test_no_flock_or_lockf_anywhere_in_ffx() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("flock", "lockf"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.Import | ast.ImportFrom) and "fcntl" in ast.unparse(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_a_live_lock_of_another_host_is_respected_and_named(tmp_path: Path, monkeypatch) -> None:
    fake_squeue(tmp_path / "bin", monkeypatch, "RUNNING\\n")
    build = BuildDir(tmp_path / "build")
    write_holder(build.lock("faces", Part().name), "node-7", age_seconds=5, job="81234")
    with (
        pytest.raises(BuildError, match="host node-7, pid 4242, Slurm job 81234"),
        hold_lock(build, "faces", Part()),
    ):
        pass
    with exclusive(build.lock("faces", Part().name)) as held:
        assert not held


def test_a_stale_lock_of_another_host_is_taken_over_by_exactly_one_run(tmp_path: Path) -> None:
    contest_a_stale_lock(tmp_path / ".locks" / "faces.merge.lock")


def test_a_held_lock_is_refreshed_and_released(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "shards.lock"
    with exclusive(path) as held:
        assert held
        os.utime(path, (0, 0))  # as if the heartbeat had stopped long ago
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5  # refreshed meanwhile
    assert not path.exists()


def test_a_waiting_run_holds_the_lock_once_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "shards.lock"
    script = (
        "import sys, time; from pathlib import Path; from ffx.pipeline.engine.lock import exclusive\n"
        "with exclusive(Path(sys.argv[1])) as held:\n"
        "    print(held, flush=True); time.sleep(1.5)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    started = time.monotonic()
    with exclusive(path, wait=True) as held:
        assert held and time.monotonic() - started > 0.5  # it waited for the other run
    holder.wait(30)


def test_two_parts_finishing_together_merge_and_lay_out_once_without_flock(
    tmp_path: Path, monkeypatch
) -> None:
    """On a file system whose flock fails (ENOLCK, as on Lustre mounted without it), two parts that
    finish at once give the shards one run gives."""

    def no_flock(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(fcntl, "lockf", no_flock)
    build = make_cropped_build(tmp_path / "parts", videos_per_label=4, frames=2, side=16)
    shard_two_parts_at_once(build, multiprocessing.get_context("fork"))  # they inherit the failing flock
    whole = make_cropped_build(tmp_path / "whole", videos_per_label=4, frames=2, side=16)
    run_shard(whole, workers=1, show_progress=False)
    for name in ("index.json", *(path.name for path in (whole / "shards").glob("*.tar"))):
        assert (build / "shards" / name).read_bytes() == (whole / "shards" / name).read_bytes(), name
    assert not list((build / ".locks").glob("*.lock"))  # every lock released


def fake_squeue(folder: Path, monkeypatch, stdout: str, stderr: str = "", code: int = 0) -> None:
    """An `squeue` on PATH that answers as Slurm's does (the real one: tests/cluster/test_slurm.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '{stdout}'\nprintf '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(lock, "_squeue_answers", {})


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "taken"),
    [
        ("RUNNING\\n", "", 0, False),
        ("COMPLETING\\n", "", 0, False),
        ("PENDING\\n", "", 0, False),
        ("CANCELLED\\n", "", 0, True),
        ("TIMEOUT\\n", "", 0, True),
        ("", "", 0, False),  # not listed: no proof (PrivateData hides other users' jobs)
        ("", "slurm_load_jobs error: Invalid job id specified\\n", 1, True),  # forgotten
        ("", "slurm_load_jobs error: Unable to contact slurm controller\\n", 1, False),  # cannot say
    ],
)
def test_a_fresh_lock_is_taken_over_only_when_its_slurm_job_has_ended(
    tmp_path: Path, monkeypatch, stdout: str, stderr: str, code: int, taken: bool
) -> None:
    fake_squeue(tmp_path / "bin", monkeypatch, stdout, stderr, code)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    path = tmp_path / ".locks" / "faces.merge.lock"
    write_holder(path, "node-7", age_seconds=5, job="81234")  # its heartbeat is fresh: alive,
    with exclusive(path) as held:  # whatever squeue says (it may not see the job: PrivateData)
        assert not held
    write_holder(path, "node-7", age_seconds=3 * lock.HEARTBEAT_SECONDS, job="81234")  # beats missed
    with exclusive(path) as held:
        assert held is taken


def test_a_lock_of_this_very_slurm_job_is_gone_only_if_an_earlier_run_of_it(
    tmp_path: Path, monkeypatch
) -> None:
    """A requeued task keeps its job id: its earlier run's lock (another restart count) is gone,
    whatever squeue says; a lock of this very run of the job is not."""
    fake_squeue(tmp_path / "bin", monkeypatch, "RUNNING\\n")
    monkeypatch.setenv("SLURM_JOB_ID", "81234")
    path = tmp_path / "shards.lock"
    write_holder(path, "node-7", age_seconds=3 * lock.HEARTBEAT_SECONDS, job="81234")  # restart 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with exclusive(path) as held:
        assert not held
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with exclusive(path) as held:
        assert held


def test_a_lock_of_another_node_with_this_host_name_is_not_judged_by_pid(tmp_path: Path) -> None:
    """Two nodes (or containers) may share a host name: a pid means a process on this very node
    (boot id and pid namespace) only."""
    path = tmp_path / "faces.merge.lock"
    holder = {"host": socket.gethostname(), "node": "another-boot:1", "pid": 2**22 + 7, "started": 0.0}
    path.write_text(json.dumps(holder))
    with exclusive(path) as held:
        assert not held  # its heartbeat is fresh
    holder["node"] = lock._node()  # this node: that pid is no process here
    path.write_text(json.dumps(holder))
    with exclusive(path) as held:
        assert held


def test_a_run_stopped_past_the_limit_does_not_refresh_its_successors_lock(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "shards.lock"
    with exclusive(path) as held:
        assert held
        successor = write_holder(path, "node-7", age_seconds=500)  # took over while this run was stopped
        time.sleep(0.3)
        assert json.loads(path.read_text()) == successor
        assert time.time() - path.stat().st_mtime > 400  # not refreshed by this run's heartbeat
    assert json.loads(path.read_text()) == successor  # nor removed


def test_the_recipe_is_written_back_one_run_at_a_time(tmp_path: Path) -> None:
    """A stage's changed option and `ffx index` wait for each other's recipe write."""
    from ffx.pipeline.engine.currency import apply_options, load_recipe

    build = BuildDir(make_cropped_build(tmp_path, videos_per_label=1, frames=1, side=16))
    script = (
        "import sys, time; from pathlib import Path; from ffx.pipeline.engine.lock import exclusive\n"
        "with exclusive(Path(sys.argv[1])) as held:\n"
        "    print(held, flush=True); time.sleep(1.5)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(build.recipe_lock)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "True"
    started = time.monotonic()
    recipe = apply_options(build, {"crop.size": 64})
    assert time.monotonic() - started > 0.5  # it waited for the holder
    assert load_recipe(build).crop.size == 64
    assert json.loads(build.index.read_text())["manifest_sha256"] == recipe.digest()
    # Two stages' options written one after the other: both kept (each is applied to the recipe
    # as found under the lock, not as read before it).
    apply_options(build, {"extract.png_level": 2})
    assert (load_recipe(build).crop.size, load_recipe(build).extract.png_level) == (64, 2)
    holder.wait(30)
