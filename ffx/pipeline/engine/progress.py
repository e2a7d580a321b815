"""A rich progress bar for stages: items done of total, items/s, a second rate (frames, faces), ETA."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class StageProgress:
    """Counts items and a secondary unit; renders both rates when a console is attached."""

    def __init__(self, progress: Progress | None, task_id: int | None, unit: str, second_unit: str):
        self.progress, self.task_id = progress, task_id
        self.unit, self.second_unit = unit, second_unit
        self.items = 0
        self.second_units = 0
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since the stage started."""
        return time.monotonic() - self.started

    def advance(self, items: int = 1, second_units: int = 0) -> None:
        self.items += items
        self.second_units += second_units
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            rates = (
                f"{self.items / elapsed:.1f} {self.unit}/s  "
                f"{self.second_units / elapsed:.1f} {self.second_unit}/s"
            )
            self.progress.update(self.task_id, advance=items, rates=rates)

    def resume_at(self, items: int) -> None:
        """Show `items` as done before this run (they do not count in the rates)."""
        if self.progress is not None:
            self.progress.update(self.task_id, completed=items)

    def describe(self, text: str) -> None:
        """Replace the bar's label (e.g. with the current loss)."""
        if self.progress is not None:
            self.progress.update(self.task_id, description=text)


@contextmanager
def stage_progress(description: str, total: int, unit: str, second_unit: str, enabled: bool = True):
    """Yield a StageProgress; draws on stderr only when `enabled` (and rich finds a terminal)."""
    if not enabled:
        yield StageProgress(None, None, unit, second_unit)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task_id = progress.add_task(description, total=total, rates="")
        yield StageProgress(progress, task_id, unit, second_unit)
