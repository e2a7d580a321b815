"""What the benchmark scripts in bench/ share: the harness (common.harness: timing, alternating
rounds, the command line, the report and the results file), waiting for a quiet machine
(common.quiet), and here the paths, the environment and the inputs.

The scripts import it as `from common import ...`: Python puts a script's own folder first on
sys.path. Importing it appends the repository root to sys.path (after the installed packages, so
an `ffx` on PYTHONPATH still wins), for `tests.generated`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MEDIA_DIR = REPO.parent / "shared" / "media"
FFX = str(Path(sys.executable).with_name("ffx"))  # the venv's entry point, as a user runs it
CROP_SIDE = 512  # ffx crop's default output size
CLIP_SQUARE = 0.75  # the centred square cut from a clip frame, as a share of its shorter side
POOL_FRAMES = 40  # frames kept per clip for generated crops, evenly spread over it
TRAIN_SHARDS = 8  # the automatic shard size aims at this many train shards
FACELESS_KEY = "fake__none"  # make_cropped_build's video without a face
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def set_flags(settings: dict | Iterable[str]) -> list[str]:
    """`--set FIELD=VALUE` for each of `settings` (a dict, or FIELD=VALUE strings), as ffx takes them."""
    assignments = (
        [f"{name}={value}" for name, value in settings.items()] if isinstance(settings, dict) else settings
    )
    return [flag for assignment in assignments for flag in ("--set", assignment)]


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask on Linux, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def environment(**versions: object) -> dict:
    """CPUs, platform, Python, ffx and its git revision ("" without git), then `versions`."""
    import ffx

    try:
        git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    except OSError:  # no git, as on a lent GPU machine
        git = ""
    return {"cpu_count": os.cpu_count(), "cpus_available": available_cores(), "platform": platform.platform(),
            "python": platform.python_version(), "ffx": ffx.__version__, "git": git, **versions}  # fmt: skip


def print_environment(env: dict) -> None:
    """One line: the CPUs, then every library version and setting recorded."""
    skip = {"cpu_count", "cpus_available", "platform", "ffx", "git"}
    others = "   ".join(f"{name} {value}" for name, value in env.items() if name not in skip)
    print(f"\nCPUs: {env['cpu_count']} ({env['cpus_available']} available)   {others}   "
          f"ffx {env['ffx']} ({env['git']})   {env['platform']}")  # fmt: skip


def media_videos() -> list[Path]:
    """The real clips in ../shared/media/videos, sorted (none when the folder is absent)."""
    return sorted((MEDIA_DIR / "videos").glob("*.mp4"))


def read_video(path: Path, frames: int) -> list[np.ndarray]:
    """The first `frames` frames of a video as RGB arrays, decoded by OpenCV (on every machine)."""
    capture, pictures = cv2.VideoCapture(str(path)), []
    while len(pictures) < frames and (read := capture.read())[0]:
        pictures.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    capture.release()
    return pictures


def texture_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-looking RGB texture (float32, about 128 +- 45): noise octaves upscaled from 2x to
    128x, larger ones stronger (roughly 1/f), so it has smooth areas and fine detail like a scene."""
    field = np.zeros((height, width, 3), np.float32)
    for scale in (2, 4, 8, 16, 32, 64, 128):
        coarse = rng.standard_normal((height // scale + 3, width // scale + 3, 3), dtype=np.float32)
        size = ((coarse.shape[1] - 1) * scale, (coarse.shape[0] - 1) * scale)
        upscaled = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
        field += scale * upscaled[scale : scale + height, scale : scale + width]
    return 128 + field / field.std() * 45


def texture(seed: int, side: int) -> np.ndarray:
    """A seeded `side` x `side` uint8 RGB image of texture_field."""
    return np.clip(texture_field(np.random.default_rng(seed), side, side), 0, 255).astype(np.uint8)


def square_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    """The centred square of a frame (CLIP_SQUARE of its shorter side), resized to `side`."""
    height, width = rgb.shape[:2]
    square = int(min(height, width) * CLIP_SQUARE)
    top, left = (height - square) // 2, (width - square) // 2
    interpolation = cv2.INTER_AREA if square > side else cv2.INTER_CUBIC
    return cv2.resize(
        rgb[top : top + square, left : left + square], (side, side), interpolation=interpolation
    )


class CropPixels:
    """make_cropped_build's `pixels`: a video's crops are successive frames of one real clip (the
    clip and start chosen by the key's hash), so they compress and decode like real face crops;
    seeded smooth textures without clips."""

    def __init__(self, clips: list[Path], side: int = CROP_SIDE):
        import av

        self.pools = []
        for clip in clips:
            with av.open(str(clip)) as container:
                frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
            chosen = sorted({n * len(frames) // POOL_FRAMES for n in range(POOL_FRAMES)})
            self.pools.append([square_crop(frames[index], side) for index in chosen])

    def __call__(self, key: str, frame: int, side: int) -> np.ndarray:
        number = _number(key)
        if not self.pools:
            return texture(_number(f"{key}/{frame}"), side)
        pool = self.pools[number % len(self.pools)]
        return pool[(number // len(self.pools) + frame) % len(pool)]


def _number(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def cropped_build(work: Path, videos_per_label: int, frames: int, clips: list[Path]) -> tuple[Path, str]:
    """tests/generated.py's build with crops (a folder tree of placeholder clips, indexed, then
    crop PNGs and stamped tables written directly, no extract or crop), its crops taken from the
    real clips (CropPixels); the build and where its pixels came from, in words."""
    from tests.generated import make_cropped_build

    build = make_cropped_build(work, videos_per_label, frames, CROP_SIDE, CropPixels(clips))
    return build, f"frames of {', '.join(clip.name for clip in clips)}" if clips else "smooth random textures"


def warm_page_cache(paths: Iterable[Path]) -> None:
    """Read every input once so that all timed parts start with them in the page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def tree_bytes(directory: Path, pattern: str = "*") -> tuple[int, int]:
    """(files, bytes) of the files matching `pattern` below `directory`."""
    sizes = [path.stat().st_size for path in directory.rglob(pattern) if path.is_file()]
    return len(sizes), sum(sizes)
