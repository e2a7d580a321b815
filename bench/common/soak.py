"""The chaos soak's records (bench/soak.py): the faults it injected, what it saw, and its report in
words; pure, so that they can be read and tested without a Slurm cluster."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .figures import listed

KINDS = ("kill", "disk-full", "duplicate", "shard", "chunk")


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


def task_states(squeue: str) -> dict[str, str]:
    """Task id -> state, from `squeue --noheader --format='%i %T'`'s output."""
    return dict(line.split() for line in squeue.splitlines() if len(line.split()) == 2)


def summary(soak: Soak) -> list[str]:
    """The report's lines: the verdict, the faults, the rounds, the seconds, each check, each note."""
    passed = all(soak.checks.values())
    verdict = "PASS" if passed else "FAIL"
    return [
        f"\nsoak: {soak.videos} videos, {soak.parts} parts a stage, seed {soak.seed}: {verdict}",
        f"  faults injected: {len(soak.faults)} ({dict(Counter(f.kind for f in soak.faults))}); "
        f"survived: {len(soak.faults) if passed else 'not all'}",
        f"  rounds (submissions of the chain): {soak.rounds}; resubmissions: {soak.rounds - 1}; "
        f"duplicate arrays: {len(soak.duplicates)}; task states: {dict(soak.task_states)}",
        f"  seconds: {listed(soak.seconds, '.1f')}",
        *(f"  {'ok  ' if ok else 'FAIL'} {name}" for name, ok in soak.checks.items()),
        *(f"  note: {note}" for note in soak.notes),
    ]
