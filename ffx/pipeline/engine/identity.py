"""What an item is made from, as digests: the engine's `made_from` and a frame's pixels.

Kept free of pyarrow and pydantic so that worker processes, which compute some of these digests
themselves (`ffx build` crops in the same pass that decodes), import them cheaply.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def digest(*values: Any) -> str:
    """sha256 of values in canonical JSON: the identity of what an item is made from."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pixels_sha256(rgb: np.ndarray) -> str:
    """sha256 of a decoded frame: its shape, then its pixels in row order."""
    height, width, channels = rgb.shape
    hasher = hashlib.sha256(f"{height}x{width}x{channels}:".encode())
    hasher.update(np.ascontiguousarray(rgb, np.uint8).data)
    return hasher.hexdigest()


def frames_identity(rows: list[dict]) -> str:
    """What a video's crops are made from upstream: its frames (index and pixels, in order) and,
    for a video without frames, why. Where the pixels are kept (a PNG, or only in the video) is not
    part of it: crops are the same either way."""
    return digest([[row["frame_index"], row["pixels_sha256"], row["status"], row["error"]] for row in rows])


def crop_made_from(settings: dict, frames: str, original: str | None) -> str:
    """The `made_from` of a video's crop rows: the `[crop]` settings, its frames' identity and, for
    a fake whose original is in the build, the original's frames identity (box reuse) or
    "detected"."""
    return digest(settings, frames) if original is None else digest(settings, frames, original)
