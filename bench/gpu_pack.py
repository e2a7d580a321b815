"""Pack what bench/gpu.py lacks on a lent GPU machine (its Python 3.12 has torch, torchvision, timm, numpy,
OpenCV, Pillow, pyarrow; no network; 64 MiB a run) into bench/results/gpu-pack/ (git ignores it): the real
clips and the wheels the lock pins there of PyAV (not decord), pydantic, webdataset, deflate, facenet-pytorch.

    python3 bench/gpu_pack.py [--python 3.11]  # -> bench/results/gpu-pack/{wheels,media}; 3.11: to test"""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    from packaging.markers import Marker
except ImportError:  # a bare Python: pip's copy
    from pip._vendor.packaging.markers import Marker

REPO = Path(__file__).resolve().parents[1]  # not `common`'s: a bare Python, without numpy, runs this
PACK, MEDIA, LIMIT = REPO / "bench/results/gpu-pack", REPO.parent / "shared/media/videos", 64 << 20
# --no-deps: facenet-pytorch's pins are stale
WHEELS = ("av", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "webdataset",
          "braceexpand", "deflate", "facenet-pytorch")  # fmt: skip
PLATFORMS = [f"--platform=manylinux{tag}_x86_64" for tag in ("_2_28", "_2_17", "2014", "1")]


def pins(python: str) -> dict[str, str]:
    """name -> version from requirements.lock, for the markers that hold on `python` on x86-64 Linux."""
    minor = ".".join(python.split(".")[:2])  # 3.12 of 3.12.4
    where = {"python_version": minor, "python_full_version": f"{minor}.0", "implementation_name": "cpython",
             "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}  # fmt: skip
    lines = (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
    found = (re.match(r"^([A-Za-z0-9_.-]+)==([^ ;]+)\s*(?:;\s*(.+))?$", line.strip()) for line in lines)
    return {m[1].lower(): m[2] for m in found if m and (m[3] is None or Marker(m[3]).evaluate(where))}


def main() -> int | str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="3.12", help="the lent machine's Python (default: 3.12)")
    parser.add_argument("--out", type=Path, default=PACK, help=f"the folder (default: {PACK})")
    args = parser.parse_args()
    if missing := sorted(set(WHEELS) - (versions := pins(args.python)).keys()):
        return f"requirements.lock pins no {', '.join(missing)} for Python {args.python}: regenerate the lock"
    if not any(MEDIA.glob("*.mp4")):
        return f"no clips in {MEDIA}: bench/gpu.py needs the real clips"
    shutil.rmtree(args.out, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", *PLATFORMS]
    pip += ["--implementation", "cp", "--python-version", args.python, "-d", str(args.out / "wheels")]
    subprocess.run([*pip, *(f"{name}=={versions[name]}" for name in WHEELS)], check=True)
    shutil.copytree(MEDIA, args.out / "media", ignore=lambda _, names: [n for n in names if n[-4:] != ".mp4"])
    for path in (files := sorted(path for path in args.out.rglob("*") if path.is_file())):
        print(f"  {path.stat().st_size / 2**20:6.2f} MiB  {path.relative_to(args.out)}")
    total = sum(path.stat().st_size for path in files)
    print(f"{args.out}: {total / 2**20:.1f} MiB (limit {LIMIT >> 20} MiB with the working tree)")
    return 0 if total <= LIMIT else f"{args.out} is over the {LIMIT >> 20} MiB a run carries"


if __name__ == "__main__":
    sys.exit(main())
