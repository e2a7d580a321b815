"""Locks on shared build state as lock files: a stage's run per part, a table's merge, the shards' layout.

No flock or lockf anywhere: on Lustre mounted without flock it is an error, and on NFS it may hold
on one node only. A lock file is written whole beside its final name and linked into place (link,
like O_EXCL, fails when the name exists, on NFS and Lustre too), so it always names its holder:
host, pid, Slurm job and start. While held, its modification time is refreshed every
`HEARTBEAT_SECONDS`. A lock is taken over only when its holder is provably gone: the same host and
its process no longer exists (the same boot and pid namespace too), or its heartbeat is older than
`STALE_SECONDS` (a node that died), or it missed a heartbeat and its Slurm job has left the queue
(squeue says so; a job cancelled or timed out takes its processes with it). Ages are measured on
the file server's clock (a file's mtime), never a node's own. Exactly one run breaks a gone
holder's lock (it holds `{lock}.break`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ffx.errors import BuildError
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import command_of

HEARTBEAT_SECONDS = 30.0  # how often a held lock's modification time is refreshed
STALE_SECONDS = 600.0  # a lock not refreshed for this long belongs to a holder that is gone
WAIT_POLL_SECONDS = 0.5  # how often a run that waits for a lock tries again
BREAK_SECONDS = 120.0  # a break file older than this belongs to a run that died while breaking
SQUEUE_SECONDS = 30.0  # how long squeue's answer on a holder's job is reused (spare the controller)
# Job states of a job whose processes have all ended (squeue lists a job so for a while after).
ENDED_STATES = frozenset(
    [
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    ]
)
_squeue_answers: dict[str, tuple[float, bool]] = {}


@contextmanager
def hold_lock(build: BuildDir, stage: str, part: Part):
    """Hold `stage`'s lock for `part`. A second run of the stage exits naming the holder, whether it
    asks for the same part or for another part count (two part counts share videos); parts of
    one count run at once."""
    path = build.lock(stage, part.name)
    with exclusive(path, part=part.name) as held:
        if not held:
            raise _held(build, stage, path, _read_lock(path))
        now = path.stat().st_mtime  # ours, just linked: the file server's clock
        for other_path in sorted(path.parent.glob(f"{stage}.part-*.lock")):
            other = _read_lock(other_path)
            if (
                other_path != path
                and other
                and not _is_gone(other_path, other, now)
                and _count(other_path) != part.count
            ):
                raise _held(build, stage, other_path, other)
        yield


@contextmanager
def exclusive(path: Path, wait: bool = False, **facts) -> Iterator[bool]:
    """Hold the lock file `path` (its holder's record gets `facts` too). Yields True when held;
    False at once when a live holder has it, unless `wait`: then it tries again until it holds
    it. The lock is refreshed while held and removed after."""
    holder = {
        "host": socket.gethostname(),
        "node": _node(),
        "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_cluster": os.environ.get("SLURM_CLUSTER_NAME", ""),
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
        "started": time.time(),
        **facts,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    while not (held := _take(path, holder)) and wait:
        time.sleep(WAIT_POLL_SECONDS)
    if not held:
        yield False
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, holder, stop), daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join()
        if _read_lock(path) == holder:
            path.unlink(missing_ok=True)


def _take(path: Path, holder: dict) -> bool:
    """Link a lock file naming `holder` into place; a gone holder's lock is moved aside first."""
    draft = path.with_name(f".{path.name}.{holder['host']}.{holder['pid']}.{threading.get_ident()}.tmp")
    draft.write_text(json.dumps(holder), encoding="utf-8")
    try:
        for _attempt in range(3):
            try:
                os.link(draft, path)
                return True
            except FileExistsError:
                other = _read_lock(path)
                now = draft.stat().st_mtime  # the file server's clock, as the heartbeats'
                if other is not None and not (_is_gone(path, other, now) and _break(path, other, now)):
                    return False
        return False
    finally:
        draft.unlink(missing_ok=True)


def _break(path: Path, other: dict, now: float) -> bool:
    """Remove a gone holder's lock, as the one run that holds `{lock}.break` (made with O_EXCL):
    runs that found it gone at once would otherwise each move aside the lock the first of them
    had taken meanwhile. False when another run is breaking it; a break file left by a run that
    died while breaking (it takes milliseconds) is removed after BREAK_SECONDS."""
    breaker = path.with_name(f"{path.name}.break")
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if now - breaker.stat().st_mtime > BREAK_SECONDS:
                breaker.unlink()
        return False
    try:
        if _read_lock(path) == other:  # still the gone holder's: no other run can take it now
            _move_aside(path, other)
        return True
    finally:
        breaker.unlink(missing_ok=True)


def _heartbeat(path: Path, holder: dict, stop: threading.Event) -> None:
    """Refresh the lock's time (the file server's: utime with no times) while it names `holder`;
    a lock taken over meanwhile (this process was stopped longer than STALE_SECONDS) is never
    refreshed, so the new holder's own death is not hidden."""
    while not stop.wait(HEARTBEAT_SECONDS):
        if _read_lock(path) != holder:
            return
        with contextlib.suppress(OSError):
            os.utime(path)


@functools.cache
def _node() -> str:
    """This machine and process namespace: its boot id and pid namespace. A pid means a process
    only on the same node (two nodes may share a host name; containers have their own pids)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _move_aside(path: Path, other: dict) -> None:
    """Move a gone holder's lock aside (and back, if it was a new holder's by then)."""
    aside = path.with_name(f".{path.name}.gone.{socket.gethostname()}.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run moved it first
    if _read_lock(aside) != other:  # it was a new holder's lock by then: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _count(path: Path) -> int:
    """The part count in a lock file's name (`{stage}.part-00000-of-00004.lock` -> 4)."""
    return int(path.stem.rsplit("-of-", 1)[1])


def _held(build: BuildDir, stage: str, path: Path, other: dict | None) -> BuildError:
    if not other:
        return BuildError(f"{path} is a lock file that names no holder; delete it if no ffx runs on {build}")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("started", 0)))
    job = f", Slurm job {other['slurm_job']}" if other.get("slurm_job") else ""
    return BuildError(
        f"another {command_of(stage, stage)} is running on {build} ({other.get('part')}): "
        f"host {other.get('host')}, pid {other.get('pid')}{job}, since {since}; wait for it, "
        f"or delete {path} if that process is gone"
    )


def _read_lock(path: Path) -> dict | None:
    """The holder a lock file names; None when there is no such file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # a garbage file (not ffx's): held, the message says how to remove it


def _is_gone(path: Path, holder: dict, now: float) -> bool:
    """Whether a lock's holder is provably gone: its heartbeat stopped more than STALE_SECONDS
    ago; or it ran on this very node (same host, boot and pid namespace) and its process no
    longer exists; or it missed a heartbeat and its Slurm job (on this cluster) has ended or, a
    requeued task, restarted. `now` is the file server's clock (a draft file's mtime)."""
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if age > STALE_SECONDS:
        return True
    node = _node()  # a lock written before ffx recorded nodes is taken as this node's
    here = holder.get("host") == socket.gethostname() and holder.get("node", node) == node
    if here and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    # squeue can miss a live job (PrivateData, a hidden partition, another cluster on the same
    # file system): it is asked only about a holder that has missed a heartbeat.
    job = holder.get("slurm_job")
    if not (job and isinstance(job, str) and age > 2 * HEARTBEAT_SECONDS):
        return False
    if holder.get("slurm_cluster", "") != os.environ.get("SLURM_CLUSTER_NAME", ""):
        return False
    if job == os.environ.get("SLURM_JOB_ID"):  # this job, requeued: was that an earlier run of it?
        return str(holder.get("slurm_restart", "0")) != os.environ.get("SLURM_RESTART_COUNT", "0")
    return _job_ended(job)


def _job_ended(job: str) -> bool:
    """Whether Slurm says `job` has ended: listed in an end state, or no longer known. False when
    squeue is absent or cannot answer (the controller down): then only the heartbeat can tell."""
    asked, ended = _squeue_answers.get(job, (0.0, False))
    if time.monotonic() - asked < SQUEUE_SECONDS:
        return ended
    squeue = shutil.which("squeue")
    if squeue is None:
        return False
    try:
        done = subprocess.run(
            [squeue, "--noheader", "--all", "--states=all", f"--jobs={job}", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode == 0:
        states = done.stdout.split()
        # Listed and ended; none listed is no proof (PrivateData hides other users' jobs): Slurm
        # answers "Invalid job id" once it has forgotten a job.
        ended = bool(states) and all(state in ENDED_STATES for state in states)
    else:
        ended = "Invalid job id" in done.stderr  # Slurm forgot it (MinJobAge passed)
    _squeue_answers[job] = (time.monotonic(), ended)
    return ended
