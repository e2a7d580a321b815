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

from ffx import __version__
from ffx.errors import BuildError
from ffx.pipeline.engine import atomic, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.status import build_status

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


def lock_file_sha256() -> str:
    """sha256 of the requirements.lock ffx was installed from (a checkout's), "absent" without one."""
    lock = Path(__file__).resolve().parents[3] / "requirements.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "absent"


def input_fingerprint(build: BuildDir, strict: bool = False) -> dict:
    """One digest over every indexed video: path, size and mtime (fast), or path and sha256 (strict)."""
    build = BuildDir(build)
    root = Path(json.loads(build.index.read_text(encoding="utf-8"))["root"])
    paths = sorted(store.read_table(build.videos, "`ffx index`").select(["path"]).column("path").to_pylist())
    digest = hashlib.sha256()
    missing = 0
    for path in paths:
        source = root / path
        try:
            if strict:
                facts = atomic.file_sha256(source)
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


def write_build_record(build: Path | BuildDir, strict: bool = False) -> dict:
    """The build's finishing step: BUILD/build.json from its effective recipe, tables and shard
    index (which must be the layout of its current tables); return it."""
    from ffx.pipeline.stages.shard import shards_layout

    build = BuildDir(build)
    recipe = load_manifest(build.manifest)
    shard_index = (
        json.loads(build.shard_index.read_text(encoding="utf-8")) if build.shard_index.is_file() else {}
    )
    if shards_layout(build, recipe) != shard_index.get("layout_digest"):
        raise BuildError(
            f"{build.shard_index} is not the layout of the build's tables: run `ffx shard {build}`"
        )
    index = json.loads(build.index.read_text(encoding="utf-8"))
    shards = shard_index["shards"]
    record = {
        "ffx": __version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "requirements_lock_sha256": lock_file_sha256(),
        "made_on": store.run_machines(build.root),
        "manifest": recipe.model_dump(mode="json"),
        "manifest_sha256": recipe.digest(),
        "split_method": index.get("split_method"),
        "inputs": input_fingerprint(build, strict),
        "stages": {
            stage.stage: {"videos": stage.videos, "by_status": stage.items, "rows": stage.rows}
            for stage in build_status(build)
        },
        "seconds": store.stage_seconds(build.root),
        "shards": {entry["name"]: entry["sha256"] for entry in shards},
    }
    atomic.write_json(build.record, record)
    return record
