"""Helpers for the figures of bench/noop_rerun.py, scale.py and soak.py: a block's seconds, a line of
named figures, a growth exponent."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(figures: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block took as figures[name]."""
    start = time.perf_counter()
    yield
    figures[name] = time.perf_counter() - start


def listed(figures: dict[str, float], spec: str = ".2f", unit: str = "") -> str:
    """The figures on one line: `name value, name value`."""
    return ", ".join(f"{name} {value:{spec}}{unit}" for name, value in figures.items())


def exponent(seconds: dict[int, float], base: float = 0.0, floor: float = 0.0) -> float | None:
    """How a time grows with the size: the least-squares slope of log(t - base) over log(size),
    over the sizes where t - base >= floor (None: under 2 such sizes)."""
    points = [(math.log(n), math.log(t - base)) for n, t in seconds.items() if t - base >= floor]
    if len(points) < 2:
        return None
    mean_x, mean_y = (sum(p[i] for p in points) / len(points) for i in (0, 1))
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
