"""Frame sampling rules: which decoded frame indices a video contributes.

`first:N` the first N frames (the paper); `stride:S:O[:MAX]` every i with i % S == O and
i < MAX (the public MCX-API code is `stride:10:1:301`); `linspace:N` N indices spread evenly
over the whole video, each rounded to the nearest frame; `dfb-linspace:N` DeepfakeBench's rule
(`preprocessing/preprocess.py`: `np.linspace(0, n - 1, N, dtype=int)`), the same points
truncated towards 0; `all` every frame.

The two spread rules differ on about half the indices (15 of 32 on 120-, 300- and 397-frame
videos, tested): use `dfb-linspace:N` to take the very frames DeepfakeBench's preprocessing takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffx.errors import FfxError

# Rules that spread N indices over the whole video (they need its frame count).
SPREAD = ("linspace", "dfb-linspace")


def spread_indices(kind: str, total_frames: int, count: int) -> list[int]:
    """`count` indices over frames 0 .. total_frames - 1: rounded (`linspace`) or truncated as
    DeepfakeBench's `np.linspace(..., dtype=int)` (`dfb-linspace`); sorted, repeats kept."""
    if kind == "dfb-linspace":
        return np.linspace(0, total_frames - 1, count, dtype=int).tolist()
    return np.linspace(0, total_frames - 1, count).round().astype(int).tolist()


@dataclass(frozen=True)
class Sampling:
    """A parsed sampling rule."""

    kind: str  # first | stride | linspace | dfb-linspace | all
    count: int = 0  # first, linspace
    step: int = 1  # stride
    offset: int = 0  # stride
    limit: int | None = None  # stride: indices below this

    @property
    def needs_length(self) -> bool:
        """True when the chosen indices depend on the video's length (linspace)."""
        return self.kind in SPREAD

    def plan(self, total_frames: int | None) -> FramePlan:
        """The indices to keep for a video of `total_frames` frames (None: unknown)."""
        if self.kind == "first":
            return FramePlan(frozenset(range(self.count)), self.count - 1, self.count)
        if self.kind == "stride":
            limit = self.limit
            if limit is None:
                return FramePlan(None, None, None, step=self.step, offset=self.offset)
            wanted = frozenset(range(self.offset, limit, self.step))
            return FramePlan(wanted, max(wanted, default=-1), len(wanted))
        if self.kind in SPREAD:
            if not total_frames:
                raise FfxError(f"{self.kind} sampling needs the video's frame count")
            wanted = frozenset(spread_indices(self.kind, total_frames, self.count))
            return FramePlan(wanted, max(wanted), self.count)
        return FramePlan(None, None, None)


@dataclass(frozen=True)
class FramePlan:
    """Frame indices to keep from a sequential decode: an explicit set, or every frame matching
    step/offset when the set is open-ended (`all`, stride without a limit)."""

    wanted: frozenset[int] | None
    last: int | None  # decoding stops after this index; None: decode to the end
    asked: int | None  # how many frames the rule asks for; None: as many as the video has
    step: int = 1
    offset: int = 0

    def keeps(self, frame_index: int) -> bool:
        if self.wanted is not None:
            return frame_index in self.wanted
        return frame_index % self.step == self.offset

    def done(self, frame_index: int) -> bool:
        """True once `frame_index` is past the last frame this plan can keep."""
        return self.last is not None and frame_index >= self.last


def parse_sampling(text: str) -> Sampling:
    """Parse `first:N`, `stride:S:O[:MAX]`, `linspace:N`, `dfb-linspace:N` or `all`."""
    parts = text.strip().split(":")
    try:
        numbers = [int(part) for part in parts[1:]]
    except ValueError:
        numbers = []
    kind = parts[0]
    valid = (
        (kind == "first" and len(numbers) == 1 and numbers[0] > 0)
        or (kind in SPREAD and len(numbers) == 1 and numbers[0] > 0)
        or (kind == "stride" and len(numbers) in (2, 3) and 0 <= numbers[1] < numbers[0])
        or (kind == "all" and len(parts) == 1)
    )
    if not valid or (kind == "stride" and len(numbers) == 3 and numbers[2] <= 0):
        raise FfxError(
            f"sampling {text!r} not understood: use first:N, stride:S:O[:MAX], linspace:N, "
            "dfb-linspace:N or all"
        )
    if kind == "stride":
        limit = numbers[2] if len(numbers) == 3 else None
        return Sampling("stride", step=numbers[0], offset=numbers[1], limit=limit)
    if kind in ("first", *SPREAD):
        return Sampling(kind, count=numbers[0])
    return Sampling("all")
