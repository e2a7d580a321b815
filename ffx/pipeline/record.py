"""BUILD/build.json: what a build is made of and how — recipe, versions, inputs, counts, shards.

Two builds with the same recipe hash, library versions and input fingerprint give the same
shards; build.json lets a reader check that without opening a single shard.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq

from ffx import __version__
from ffx.pipeline import store
from ffx.pipeline.index import INDEX_FILE, MANIFEST_FILE, VIDEOS_TABLE
from ffx.pipeline.manifest import load_manifest
from ffx.pipeline.status import build_status

BUILD_RECORD = "build.json"
LIBRARIES = (
    "torch",
    "torchvision",
    "facenet-pytorch",
    "opencv-python-headless",
    "av",
    "decord",
    "numpy",
    "pillow",
    "pyarrow",
    "webdataset",
    "timm",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a build's bytes ("absent" if not installed);
    `cv2` is OpenCV as imported, whichever of its packages provides it."""
    import cv2

    versions = {"cv2": cv2.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def input_fingerprint(build: Path, strict: bool = False) -> dict:
    """One digest over every indexed video: path, size and mtime (fast), or path and sha256 (strict)."""
    build = Path(build)
    root = Path(json.loads((build / INDEX_FILE).read_text(encoding="utf-8"))["root"])
    paths = sorted(pq.read_table(build / VIDEOS_TABLE, columns=["path"]).column("path").to_pylist())
    digest = hashlib.sha256()
    missing = 0
    for path in paths:
        source = root / path
        try:
            if strict:
                facts = store.file_sha256(source)
            else:
                stat = source.stat()
                facts = f"{stat.st_size}\t{stat.st_mtime_ns}"
        except OSError:
            facts, missing = "missing", missing + 1
        digest.update(f"{path}\t{facts}\n".encode())
    return {
        "mode": "sha256" if strict else "size+mtime",
        "files": len(paths),
        "missing": missing,
        "digest": digest.hexdigest(),
    }


def write_build_record(build: Path, shards: list[dict], strict: bool = False) -> dict:
    """Write BUILD/build.json from the build's files and its shards' index entries; return it."""
    build = Path(build)
    recipe = load_manifest(build / MANIFEST_FILE)
    seconds = store.stage_seconds(build)
    record = {
        "ffx": __version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "manifest": recipe.model_dump(mode="json"),
        "manifest_sha256": recipe.digest(),
        "inputs": input_fingerprint(build, strict),
        "stages": {
            stage.stage: {"videos": stage.videos, "by_status": stage.items, "rows": stage.rows}
            for stage in build_status(build)
        },
        "seconds": seconds,
        "shards": {entry["name"]: entry["sha256"] for entry in shards},
    }
    store.write_json(build / BUILD_RECORD, record)
    return record
