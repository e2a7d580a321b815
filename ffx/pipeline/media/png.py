"""PNG files written by ISA-L's deflate: the recipe's `png_encoder = "isal"`.

Only numpy and isal: no OpenCV, so the same bytes can be checked under other CPU models cheaply.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from isal import isal_zlib

# ISA-L's deflate levels whose output is the same on every x86 CPU: its level 3 takes other paths
# on AVX-512, AVX2 and SSE4.2 CPUs and writes other bytes (tests/pipeline/media/test_png.py).
ISAL_LEVELS = range(3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def isal_png(pixels: np.ndarray, level: int) -> bytes:
    """An 8-bit RGB or grayscale PNG, every row Up-filtered, compressed by ISA-L's deflate.

    Measured on 512-px crops of the real clips (`bench/png.py`): the three converted spaces of a
    sample in 4.9 ms and 507 kB against 16.5 ms and 556 kB with `opencv` at level 1 (libdeflate
    10.1 ms, 469 kB; zlib-ng 7.4 ms, 742 kB). At levels 0-2, ISA-L's output is the same for
    AVX-512, AVX2 and SSE4.2 kernels (tests/pipeline/media/test_png.py runs it under qemu's CPU
    models). But a CI run once wrote other bytes for the same pixels (one PNG of 720, not reproduced
    since): ISA-L is asked for (`png_encoder = "isal"`), never the bundled recipes' encoder."""
    if level not in ISAL_LEVELS:
        raise ValueError(f"png_encoder isal takes PNG levels 0-2, got {level}")
    return up_filtered_png(pixels, lambda data: isal_zlib.compress(data, level))


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
