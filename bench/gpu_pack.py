"""Pack what bench/gpu.py needs on a lent GPU machine (Python 3.12 with torch, torchvision, timm, numpy,
OpenCV, Pillow, pyarrow; no network; 64 MiB a run) into bench/results/gpu-pack/ (git ignores it): the
wheels requirements.lock pins for that Python of PyAV, pydantic and its core, webdataset, braceexpand,
isal, facenet-pytorch without its stale pins (--no-deps), and the real clips of ../shared/media/videos.

    python3 bench/gpu_pack.py                    # -> bench/results/gpu-pack/{wheels,media}
    python3 bench/gpu_pack.py --python 3.11      # wheels for another Python (a local test)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK, MEDIA, LIMIT = REPO / "bench/results/gpu-pack", REPO.parent / "shared/media/videos", 64 << 20
WHEELS = (
    "av",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "webdataset",
    "braceexpand",
    "isal",
    "facenet-pytorch",
)  # fmt: skip  (decord left out: PyAV comes first in ffx's decoders)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def pins(python: str) -> dict[str, str]:
    """name -> version from requirements.lock, for the markers that hold on `python` on x86-64 Linux."""
    try:
        from packaging.markers import Marker
    except ImportError:  # a bare Python: pip's copy
        from pip._vendor.packaging.markers import Marker

    version = ".".join(python.split(".")[:2])
    where = {"python_version": version, "python_full_version": f"{version}.0", "platform_machine": "x86_64"}
    where |= {"sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython"}
    lines = (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
    found = (re.match(r"^([A-Za-z0-9_.-]+)==([^ ;]+)\s*(?:;\s*(.+))?$", line.strip()) for line in lines)
    return {m[1].lower(): m[2] for m in found if m and (m[3] is None or Marker(m[3]).evaluate(where))}


def main() -> int | str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="3.12", help="the lent machine's Python (default: 3.12)")
    parser.add_argument("--out", type=Path, default=PACK, help=f"the folder (default: {PACK})")
    args = parser.parse_args()
    versions = pins(args.python)
    if missing := [name for name in WHEELS if name not in versions]:
        sys.exit(
            f"requirements.lock pins no {', '.join(missing)} for Python {args.python}: regenerate the lock"
        )
    if not any(MEDIA.glob("*.mp4")):
        sys.exit(f"no clips in {MEDIA}: bench/gpu.py needs the real clips")
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "media").mkdir(parents=True)
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    download += ["--python-version", args.python, "--implementation", "cp", *platforms]
    subprocess.run(
        [*download, "-d", str(args.out / "wheels"), *(f"{n}=={versions[n]}" for n in WHEELS)], check=True
    )
    for clip in sorted(MEDIA.glob("*.mp4")):
        shutil.copy(clip, args.out / "media" / clip.name)
    files = [path for path in sorted(args.out.rglob("*")) if path.is_file()]
    for path in files:
        print(f"  {path.stat().st_size / 2**20:6.2f} MiB  {path.relative_to(args.out)}")
    size = sum(path.stat().st_size for path in files)
    print(f"{args.out}: {size / 2**20:.1f} MiB (limit {LIMIT >> 20} MiB with the working tree)")
    return 0 if size <= LIMIT else f"{args.out} is over the {LIMIT >> 20} MiB a run carries"


if __name__ == "__main__":
    sys.exit(main())
