"""PNG files written by libdeflate: the recipe's `png_encoder = "libdeflate"`.

Only numpy and deflate: no OpenCV, so the same bytes can be checked under other CPU models cheaply.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import deflate
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def libdeflate_png(pixels: np.ndarray, level: int) -> bytes:
    """An 8-bit RGB or grayscale PNG, every row Up-filtered, compressed by libdeflate.

    Measured on 512-px crops of the real clips (`bench/png.py`): the three converted spaces of a
    sample in about half OpenCV's time at level 1, and 18 % smaller. libdeflate's CPU-specific
    code (its checksums, the SIMD set-up of its match finder's tables) computes the same values
    on every CPU, so its output is a function of the input, level and libdeflate version: the
    lock pins the version, and tests/pipeline/media/test_png.py checks the bytes under qemu's
    x86 CPU models."""
    return up_filtered_png(pixels, lambda data: deflate.zlib_compress(data, level))


def up_filtered_png(pixels: np.ndarray, compress: Callable[[bytes], bytes]) -> bytes:
    """An 8-bit RGB or grayscale PNG of `pixels`, every row Up-filtered, its image data the zlib
    stream `compress` makes of the filtered rows."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.dtype != np.uint8 or channels not in (1, 3):
        raise ValueError(f"cannot write a PNG of {pixels.dtype} pixels of shape {pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 2  # the Up filter: each byte minus the one above it (the first row as it is)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    data = compress(filtered.tobytes())
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
