"""PNG encoders for a sample's three converted spaces: milliseconds and bytes per sample.

Inputs (untimed): `ffx build folder` of the real clips (first --frames frames each), its 512-px face
crops; per crop its Lab, HSV and YCbCr images (what a four-space sample encodes besides the crop
itself). Each encoder writes every one of them, --rounds times (the fastest round kept), in this
process, one thread: ms and kB per sample, and a check that each PNG decodes (OpenCV) to the pixels
written. `opencv` (libpng and zlib at level 1: the Up filter and zlib's RLE strategy) and
`libdeflate` (libdeflate with the Up filter) are ffx's `png_encoder`s. The Up filter with zlib,
ISA-L (`isal`) or zlib-ng (`zlib-ng`), and fpng (`fpng`), are measured where that package is
installed, for comparison (none is in the lock).

    .venv/bin/python bench/png.py
"""

from __future__ import annotations

import subprocess
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from common import FFX, MEDIA_DIR
from common.harness import Bench, Column, print_table

from ffx.pipeline.media.color import convert
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.png import up_filtered_png

BENCH = Bench("png", __doc__, rounds=3)
BENCH.option("--frames", 10, "frames per clip (first:N) to crop", minimum=1)
SPACES = ("lab", "hsv", "ycbcr")


def encoders() -> dict[str, Callable[[np.ndarray], bytes] | str]:
    """Each candidate's encode function, or why it cannot be measured here."""
    found: dict[str, Callable[[np.ndarray], bytes] | str] = {
        "opencv level 1": partial(encode_png, level=1, encoder="opencv"),
        **{f"libdeflate level {n}": partial(encode_png, level=n, encoder="libdeflate") for n in (0, 1, 2, 6)},
        "zlib level 1, Up filter": partial(up_filtered_png, compress=partial(zlib.compress, level=1)),
    }
    try:
        from isal import isal_zlib

        found["isal level 1"] = _up_filtered_level_1(isal_zlib.compress)
    except ImportError:
        found["isal"] = "not installed (pip install isal)"
    try:
        from zlib_ng import zlib_ng

        found["zlib-ng level 1"] = _up_filtered_level_1(zlib_ng.compress)
    except ImportError:
        found["zlib-ng"] = "not installed (pip install zlib-ng)"
    try:
        import fpng

        found["fpng"] = lambda image: fpng.from_ndarray(np.ascontiguousarray(image))
    except ImportError:
        found["fpng"] = "not installed (pip install fpng lazy_loader)"
    return found


def _up_filtered_level_1(compress: Callable) -> Callable[[np.ndarray], bytes]:
    """A PNG encoder of Up-filtered rows by a zlib-like `compress(data, level)` at level 1."""
    return partial(up_filtered_png, compress=partial(_positional, compress, 1))


def _positional(compress: Callable, level: int, data: bytes) -> bytes:
    return compress(data, level)


def face_crops(work: Path, frames: int) -> list[np.ndarray]:
    """The main-face crops of the real clips, made by ffx."""
    build = work / "build"
    command = [FFX, "build", "folder", "--root", str(MEDIA_DIR / "videos"), "--build", str(build)]
    subprocess.run(
        [*command, "--set", f"sampling=first:{frames}", "--workers", "1"], check=True, capture_output=True
    )
    return [
        cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in sorted(build.glob("faces/*/*.png"))
    ]


def measure(encode: Callable[[np.ndarray], bytes], samples: list[list[np.ndarray]], rounds: int) -> dict:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        written = [encode(image) for images in samples for image in images]
        best = min(best, time.perf_counter() - started)
    decoded = (cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for png in written)
    same = all(
        np.array_equal(image, pixels) for image, pixels in zip((i for s in samples for i in s), decoded)
    )
    return {
        "ms": 1000 * best / len(samples),
        "kB": sum(map(len, written)) / len(samples) / 1000,
        "same": same,
    }


def run(args, work: Path) -> dict:
    cv2.setNumThreads(1)
    crops = face_crops(work, args.frames)
    samples = [[convert(crop, space) for space in SPACES] for crop in crops]
    rows = []
    for name, encode in encoders().items():
        print(f"Timing {name}", flush=True)
        row = {"encoder": name} | (
            {"note": encode} if isinstance(encode, str) else measure(encode, samples, args.rounds)
        )
        rows.append(row)
    reference = rows[0]
    for row in rows:
        if "ms" in row:
            row |= {"speed": reference["ms"] / row["ms"], "size": row["kB"] / reference["kB"]}
    return {"samples": len(samples), "encoders": rows}


def report(results: dict) -> None:
    columns = [
        Column("encoder", "encoder"),
        Column("ms / sample", "ms", ".2f"),
        Column("kB / sample", "kB", ".1f"),
        Column("x faster", "speed", ".2f"),
        Column("size", "size", ".3f"),
        Column("decodes the same", lambda row: {True: "yes", False: "NO"}.get(row.get("same"))),
        Column("note", lambda row: row.get("note", "")),
    ]
    print_table(
        f"{results['samples']} samples of the real clips (512-px crops: Lab, HSV, YCbCr each)",
        columns,
        results["encoders"],
    )


if __name__ == "__main__":
    BENCH.main(run, report)
