"""Deterministic work partitions: `--part i/n`, or Slurm array variables when no part is given."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ffx.errors import FfxError

_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` (0-based); item j of the sorted item list belongs to part j % count."""

    index: int = 0
    count: int = 1

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"

    def select(self, keys: Sequence[str], group_of: Mapping[str, str] | None = None) -> list[str]:
        """This part's share of `keys`, round robin over their sorted order; with `group_of`,
        round robin over sorted groups, so the keys of one group stay in one part."""
        if group_of is None:
            return sorted(keys)[self.index :: self.count]
        groups = set(sorted({group_of[key] for key in keys})[self.index :: self.count])
        return sorted(key for key in keys if group_of[key] in groups)


def parse_part(text: str | None, environ: Mapping[str, str] | None = None) -> Part:
    """`i/n` from the command line, else SLURM_ARRAY_TASK_ID/COUNT, else the whole job."""
    environ = os.environ if environ is None else environ
    if text is None and "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        return _slurm_part(environ)
    if text is None:
        return Part()
    match = _PART.match(text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise FfxError(f"--part expects i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return Part(int(match.group(1)), int(match.group(2)))


_SLURM_HINT = "run it as a task of `sbatch --array=0-N`, or give --part i/n (e.g. --part 0/4), which wins"


def _slurm_part(environ: Mapping[str, str]) -> Part:
    """This Slurm array task's part: task id minus SLURM_ARRAY_TASK_MIN, of TASK_COUNT parts (an
    array of consecutive ids); every variable that does not fit is named with its value."""

    def number(name: str, default: str | None = None) -> int:
        value = environ.get(name, default)
        if value is None or not re.fullmatch(r"\s*-?\d+\s*", value):
            raise FfxError(f"{name}={value!r} is not a whole number: {_SLURM_HINT}")
        return int(value)

    task_id, count = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_COUNT")
    first = number("SLURM_ARRAY_TASK_MIN", "0")
    if count < 1:
        raise FfxError(f"SLURM_ARRAY_TASK_COUNT={count}: an array has at least one task; {_SLURM_HINT}")
    if not 0 <= task_id - first < count:
        raise FfxError(
            f"SLURM_ARRAY_TASK_ID={task_id} is outside the array of SLURM_ARRAY_TASK_COUNT={count} "
            f"consecutive tasks from SLURM_ARRAY_TASK_MIN={first} (ids {first}..{first + count - 1}); "
            f"{_SLURM_HINT}"
        )
    return Part(task_id - first, count)
