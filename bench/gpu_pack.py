"""Pack what bench/gpu.py needs on a lent GPU machine into one folder that git ignores.

The lent machine (the `device` tool's `nvidia-h200`) has its own Python 3.12 with torch,
torchvision, timm, numpy, OpenCV, Pillow, pyarrow, scikit-learn, typer, rich and safetensors, no
network, and takes at most 64 MiB with each run. What ffx needs beyond that goes as wheels at the
versions requirements.lock pins for that Python: PyAV (ffx's decoder and prober), pydantic and its
core, webdataset with braceexpand, and facenet-pytorch without its stale pins (--no-deps). The
real clips of ../shared/media/videos go too (they do not travel with the repository).

    python3 bench/gpu_pack.py                    # -> bench/results/gpu-pack/{wheels,media}
    python3 bench/gpu_pack.py --python 3.11      # wheels for another Python (a local test)

It uses `python3 -m pip download` (the registry, once, here) and prints the folder's size; it
stops with an error when that is over the limit. bench/README.md gives the `run` command.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "bench" / "results" / "gpu-pack"  # bench/results/ is in .gitignore
MEDIA = REPO.parent / "shared" / "media" / "videos"
LIMIT = 64 * 1024 * 1024  # what one `run` carries, the working tree included
# What the lent machine's image lacks of ffx's needs (the device tool's KINDS.md package list, read
# 2026-11-17); decord is left out: PyAV comes first in ffx's decoder chain.
WHEELS = (
    "av",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "webdataset",
    "braceexpand",
)
NO_DEPS = ("facenet-pytorch",)  # its pins (torch<2.3, numpy<2, Pillow<10.3) would pull old stacks
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def marker_holds(marker: str, python: str) -> bool:
    """Whether a requirements.lock environment marker holds for Python `python` on x86-64 Linux."""
    try:
        from packaging.markers import Marker
    except ImportError:
        from pip._vendor.packaging.markers import Marker
    major_minor = ".".join(python.split(".")[:2])
    environment = {
        "python_version": major_minor,
        "python_full_version": f"{major_minor}.0",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
    }
    return Marker(marker).evaluate(environment)


def pins(python: str) -> dict[str, str]:
    """name -> version from requirements.lock, for the markers that hold on `python`."""
    found = {}
    for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;]+)\s*(?:;\s*(.+))?$", line.strip())
        if match and (match.group(3) is None or marker_holds(match.group(3), python)):
            found[match.group(1).lower()] = match.group(2)
    return found


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default="3.12", help="the lent machine's Python (default: 3.12)")
    parser.add_argument("--out", type=Path, default=PACK, help=f"the folder (default: {PACK})")
    args = parser.parse_args(argv)
    versions = pins(args.python)
    missing = [name for name in (*WHEELS, *NO_DEPS) if name not in versions]
    if missing:
        sys.exit(
            f"requirements.lock pins no {', '.join(missing)} for Python {args.python}: regenerate the lock"
        )
    if not any(MEDIA.glob("*.mp4")):
        sys.exit(f"no clips in {MEDIA}: bench/gpu.py needs the real clips")
    shutil.rmtree(args.out, ignore_errors=True)
    wheels, media = args.out / "wheels", args.out / "media"
    wheels.mkdir(parents=True)
    media.mkdir()
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", args.python, "--implementation", "cp", *platforms, "-d", str(wheels),
        *(f"{name}=={versions[name]}" for name in (*WHEELS, *NO_DEPS)),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    for clip in sorted(MEDIA.glob("*.mp4")):
        shutil.copy(clip, media / clip.name)
    size = folder_size(args.out)
    for path in sorted(args.out.rglob("*")):
        if path.is_file():
            print(f"  {path.stat().st_size / 2**20:6.2f} MiB  {path.relative_to(args.out)}")
    print(f"{args.out}: {size / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB with the working tree)")
    if size > LIMIT:
        sys.exit(f"{args.out} is {size / 2**20:.1f} MiB, over the {LIMIT / 2**20:.0f} MiB a run carries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
