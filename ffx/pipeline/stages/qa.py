"""`ffx qa`: contact sheets of the crops, to eyeball a build before training on it.

One PNG per chosen video: a grid with one tile per frame, the crop with its MTCNN probability,
or a grey tile naming the frame's status. The videos with the most frames without a face come
first, then a few others in a fixed (hash) order; `qa/worst.tsv` lists every video by that count.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import current_table
from ffx.pipeline.engine.statuses import BadInput, Status
from ffx.pipeline.media.images import encode_png, read_rgb


@dataclass
class QaReport:
    """Where the sheets went and which videos lack faces most."""

    folder: Path
    sheets: list[Path]
    worst: list[tuple[str, int, int]]  # (key, frames without a face, frames)


def write_qa(build: Path, videos: int = 24, columns: int = 10, tile: int = 112) -> QaReport:
    """Contact sheets for the `videos` most faceless videos (then others) under BUILD/qa/."""
    where = BuildDir(build)
    build = where.root
    faces = current_table(where, "faces").to_pylist()
    rows_of: dict[str, list[dict]] = defaultdict(list)
    for row in faces:
        rows_of[row["key"]].append(row)
    missing = {
        key: len({row["frame_index"] for row in rows if row["status"] != Status.OK.value})
        for key, rows in rows_of.items()
    }
    frames = {key: len({row["frame_index"] for row in rows}) for key, rows in rows_of.items()}
    order = sorted(rows_of, key=lambda key: (-missing[key], hashlib.sha1(key.encode()).hexdigest()))
    folder = where.qa
    folder.mkdir(exist_ok=True)
    worst = [(key, missing[key], frames[key]) for key in order]
    listing = "key\tframes_without_face\tframes\n" + "".join(f"{k}\t{m}\t{n}\n" for k, m, n in worst)
    atomic.write_bytes(folder / "worst.tsv", listing.encode())
    sheets = []
    for key in order[:videos]:
        sheet = _sheet(
            build, sorted(rows_of[key], key=lambda row: (row["frame_index"], row["track"])), columns, tile
        )
        path = folder / f"{key}.png"
        atomic.write_bytes(path, encode_png(sheet, 6))
        sheets.append(path)
    return QaReport(folder, sheets, worst)


def _sheet(build: Path, rows: list[dict], columns: int, tile: int) -> np.ndarray:
    rows_count = max(1, -(-len(rows) // columns))
    sheet = np.full((rows_count * tile, columns * tile, 3), 255, np.uint8)
    for position, row in enumerate(rows):
        top, left = (position // columns) * tile, (position % columns) * tile
        image, caption = np.full((tile, tile, 3), 96, np.uint8), f"{row['frame_index']} {row['status']}"
        if row["path"]:
            try:
                image = cv2.resize(read_rgb(build / row["path"]), (tile, tile), interpolation=cv2.INTER_AREA)
                caption = f"{row['frame_index']} p={row['prob']:.3f}"
            except BadInput as bad:  # a crop deleted since `ffx crop`: the tile says so
                caption = f"{row['frame_index']} {bad.status.value}"
        _label(image, caption)
        sheet[top : top + tile, left : left + tile] = image
    return sheet


def _label(image: np.ndarray, text: str) -> None:
    """White text on a black strip along the tile's bottom edge."""
    height = image.shape[0]
    image[height - 14 :, :] = 0
    cv2.putText(image, text, (2, height - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
