"""The stall-guarded worker pool: results, hangs, crashes, retries, reports keeping a task alive."""

from __future__ import annotations

import os
import time

import pytest

from ffx.errors import BuildError
from ffx.pipeline.engine.workers import Stalled, run_tasks


def square_or_misbehave(task, report):
    """Task functions must be importable by spawned workers, hence module level."""
    kind, value = task
    if kind == "hang":
        time.sleep(60)
    if kind == "die":
        os._exit(3)
    if kind == "raise":
        raise ValueError("broken on purpose")
    if kind == "pid":  # long enough for a second worker to start and take the next task
        time.sleep(3)
        return os.getpid()
    if kind == "slow-but-alive":
        for _ in range(12):
            time.sleep(0.1)
            report("tick")
    return value * value


def test_every_task_gives_its_result() -> None:
    tasks = [("ok", number) for number in range(7)]
    results = dict(run_tasks(square_or_misbehave, tasks, workers=2, stall_seconds=30))
    assert results == {("ok", number): number * number for number in range(7)}


def test_hung_and_dead_workers_are_replaced_and_reported() -> None:
    tasks = [("ok", 2), ("hang", 0), ("die", 0), ("ok", 3)]
    started = time.monotonic()
    results = dict(run_tasks(square_or_misbehave, tasks, workers=2, stall_seconds=1.0))
    assert time.monotonic() - started < 20
    assert results[("ok", 2)] == 4 and results[("ok", 3)] == 9
    hung, dead = results[("hang", 0)], results[("die", 0)]
    assert isinstance(hung, Stalled) and hung.hung and "no progress for 1 s" in hung.reason
    assert isinstance(dead, Stalled) and not dead.hung and "exit code 3" in dead.reason


def test_retry_runs_the_follow_up_task_instead() -> None:
    seen: list[tuple] = []

    def retry(task, stalled: Stalled):
        seen.append((task, stalled.hung))
        return ("ok", 5)

    results = list(run_tasks(square_or_misbehave, [("die", 0)], workers=1, stall_seconds=5, retry=retry))
    assert results == [(("ok", 5), 25)]
    assert seen == [(("die", 0), False)]


def test_reports_keep_a_slow_task_alive() -> None:
    reports: list = []
    results = list(
        run_tasks(
            square_or_misbehave,
            [("slow-but-alive", 4)],
            workers=1,
            stall_seconds=0.6,
            on_report=lambda task, message: reports.append(message),
        )
    )
    assert results == [(("slow-but-alive", 4), 16)] and reports == ["tick"] * 12


def test_an_exception_in_a_task_stops_the_run_with_its_traceback() -> None:
    with pytest.raises(BuildError, match="ValueError: broken on purpose"):
        list(run_tasks(square_or_misbehave, [("raise", 0)], workers=1, stall_seconds=5))


def test_follow_up_tasks_run_in_the_same_pool_after_the_task_they_need() -> None:
    """Dependent tasks (a fake after its original) are queued on completion, dead tasks
    included, and grow a pool that started smaller than `workers`."""
    finished: list = []

    def follow_up(task, result):
        finished.append(task)
        return [("pid", 1), ("pid", 2)] if task == ("die", 0) else []

    tasks = [("die", 0)]
    results = dict(run_tasks(square_or_misbehave, tasks, workers=2, stall_seconds=30, follow_up=follow_up))
    assert isinstance(results[("die", 0)], Stalled)
    assert finished[0] == ("die", 0) and sorted(finished[1:]) == [("pid", 1), ("pid", 2)]
    assert results[("pid", 1)] != results[("pid", 2)]  # two workers ran them side by side
