"""Item statuses and the placeholder indices of rows without a frame or a face.

Kept apart from the table schemas (pyarrow) so that worker processes import them cheaply.
"""

from __future__ import annotations

from enum import Enum

NO_FRAME = -1  # frame_index of the one row of a video that gave no frame
NO_TRACK = -1  # track of the row of a frame without a usable face


class Status(str, Enum):
    """Outcome of one item in a stage table; every item gets exactly one."""

    OK = "ok"
    PARTIAL = "partial"  # some output before a failure (truncated video)
    SHORT = "short"  # fewer frames than the sampling asked for
    NO_FACE = "no_face"
    LOW_PROB = "low_prob"
    DECODE_ERROR = "decode_error"
    TIMEOUT = "timeout"
    MISSING = "missing"  # input file or upstream item absent
    DECODE_MISMATCH = "decode_mismatch"  # the video decodes to other pixels than when it was extracted
    ERROR = "error"  # anything else, with the message in `error`


# Statuses of an item that did not come out whole: listed after a run, `--fail-on-error` exits 1.
FAILED = (
    Status.PARTIAL,
    Status.DECODE_ERROR,
    Status.TIMEOUT,
    Status.MISSING,
    Status.DECODE_MISMATCH,
    Status.ERROR,
)


class BadInput(Exception):
    """A worker found an input file of its item gone (`missing`) or unreadable (`error`): the item
    gets one row with that status and the message, and the run goes on."""

    def __init__(self, message: str, status: Status = Status.MISSING):
        super().__init__(message, status)
        self.message, self.status = message, status

    def __str__(self) -> str:
        return self.message
