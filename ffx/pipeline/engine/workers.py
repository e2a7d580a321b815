"""Worker processes with a stall guard: one task at a time per worker, killed when it hangs.

A task reports progress through a callback; a worker that reports nothing for `stall_seconds`
(a hung decoder) or dies (a crashing one) is replaced, and the caller decides whether the
task is retried in another form or recorded as failed. A task that raises stops the run:
item-level failures are results, so an exception here is a bug or a broken output disk.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ffx.errors import BuildError, OutputError, WorkerBug, os_error_line
from ffx.pipeline.engine.statuses import BadInput

PR_SET_PDEATHSIG = 1  # prctl(2)
Report = Callable[[Any], None]
TaskFunction = Callable[[Any, Report], Any]


@dataclass
class Stalled:
    """A task's worker hung or died; `last_report` is its last progress message."""

    reason: str
    last_report: Any
    hung: bool  # True: no progress for too long; False: the worker process died


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask on Linux, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def call_guarded(function: TaskFunction, task: Any, report: Report) -> Any:
    """Run a task; a missing input file is its result (the engine records a `missing` row)."""
    try:
        return function(task, report)
    except BadInput as bad:
        return bad


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the main process dies (kill -9 included), so
    no orphan goes on publishing files beside the next run."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _serve(connection: Connection, function: TaskFunction, parent: int) -> None:
    """Worker loop: say ready (imports done), then run each received task, streaming its reports."""
    _die_with_parent(parent)
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        try:
            result = function(task, lambda message: connection.send(("report", message)))
        except OSError as error:  # an output that cannot be written: the user's to fix, in one line
            connection.send(("os_error", (error.errno, error.strerror, error.filename)))
        except Exception:
            connection.send(("raised", traceback.format_exc()))
        else:
            connection.send(("done", result))


class _Worker:
    def __init__(self, context, function: TaskFunction):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, function, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.ready = False  # set by the worker's first message: start-up time is not stall time
        self.task: Any = None
        self.last_seen = 0.0
        self.last_report: Any = None

    def start(self, task: Any) -> None:
        self.task, self.last_seen, self.last_report = task, time.monotonic(), None
        self.connection.send(task)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def run_tasks(
    function: TaskFunction,
    tasks: Iterable[Any],
    workers: int,
    stall_seconds: float,
    on_report: Callable[[Any, Any], None] | None = None,
    retry: Callable[[Any, Stalled], Any | None] | None = None,
    follow_up: Callable[[Any, Any], Iterable[Any]] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield (task, result) as tasks finish, in completion order; result is a Stalled when the
    worker hung or died and `retry` returned no follow-up task for it.

    `follow_up(task, result)` may return new tasks that depend on a finished one; they run in
    the same pool, next, so dependent work pays no second start-up."""
    context = multiprocessing.get_context("spawn")  # no fork: safe with threads and on macOS
    pending = deque(tasks)
    if not pending:
        return
    pool = [_Worker(context, function) for _ in range(max(1, min(workers, len(pending))))]

    def deliver(task: Any, result: Any) -> Iterator[tuple[Any, Any]]:
        yield task, result
        if follow_up is not None:
            # Dependent tasks go first: their inputs are ready now, and a queue that ends with
            # them (a fake behind its original) leaves cores idle at the end of a run.
            pending.extendleft(reversed(list(follow_up(task, result))))

    try:
        while pending or any(worker.task is not None for worker in pool):
            idle = sum(1 for worker in pool if worker.task is None)
            pool += [_Worker(context, function) for _ in range(min(workers - len(pool), len(pending) - idle))]
            for worker in pool:
                if worker.ready and worker.task is None and pending:
                    worker.start(pending.popleft())
            busy = {
                worker.connection: worker for worker in pool if worker.task is not None or not worker.ready
            }
            for connection in wait(list(busy), timeout=0.5):
                worker = busy[connection]
                try:
                    kind, payload = connection.recv()
                except (EOFError, OSError):
                    worker.process.join(timeout=1)
                    exit_code = worker.process.exitcode
                    if worker.task is None:
                        raise BuildError(
                            f"a worker process died while starting (exit code {exit_code})"
                        ) from None
                    stalled = Stalled(f"worker died (exit code {exit_code})", worker.last_report, hung=False)
                    failed = _replace(worker, pool, context, function, stalled, pending, retry)
                    if failed is not None:
                        yield from deliver(*failed)
                    continue
                worker.last_seen = time.monotonic()
                if kind == "ready":
                    worker.ready = True
                elif kind == "report":
                    worker.last_report = payload
                    if on_report is not None:
                        on_report(worker.task, payload)
                elif kind == "done":
                    task, worker.task = worker.task, None
                    yield from deliver(task, payload)
                elif kind == "os_error":
                    raise OutputError(os_error_line(OSError(*payload)))
                else:
                    raise WorkerBug(payload)
            now = time.monotonic()
            for worker in list(pool):
                if worker.task is not None and now - worker.last_seen > stall_seconds:
                    stalled = Stalled(f"no progress for {stall_seconds:g} s", worker.last_report, hung=True)
                    failed = _replace(worker, pool, context, function, stalled, pending, retry)
                    if failed is not None:
                        yield from deliver(*failed)
    finally:
        for worker in pool:
            if worker.task is None:
                worker.stop()
            else:
                worker.kill()


def _replace(
    worker: _Worker, pool, context, function, stalled: Stalled, pending: deque, retry
) -> tuple[Any, Stalled] | None:
    """Kill a hung or dead worker and start a fresh one; queue the task's retry, or return the
    task with its Stalled result when there is none."""
    task = worker.task
    worker.task = None
    worker.kill()
    pool[pool.index(worker)] = _Worker(context, function)
    retried = retry(task, stalled) if retry is not None else None
    if retried is not None:
        pending.appendleft(retried)
        return None
    return task, stalled
