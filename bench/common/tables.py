"""A finished DFDC-sized build without decoding its videos (issue 23): what bench/scale_tables.py makes,
the table-only builds of bench/scale.py.

A DFDC tree of N videos (common/trees.py's clips, 30 frames each) is indexed for real, and a
prototype tree of each distinct clip once is built for real. Every video then gets its clip's rows in
frames, faces and samples (its own key, paths, sample names, split), every file they name is a hard
link to the prototype's, the shards of the real layout are links to one prototype shard recorded as
written, and each table is stamped as its stage's plan stamps it: a no-op over the build is a real
no-op. The shards hold the prototype's bytes: verify, export and train are measured on decoded builds.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ffx.pipeline.engine import atomic, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import load_recipe, write_recipe
from ffx.pipeline.engine.registry import make_stage
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.loaders import write_loader_files
from ffx.pipeline.stages.record import write_build_record
from ffx.pipeline.stages.shard import _file_identity, _index, planned_shards

from .trees import DFDC_FAKES_PER_REAL, make_dfdc

FRAMES, CROP_SIZE = 30, 128  # frame rows a video, as DFDC's usual sampling (first:30)


def recipe_settings(frames: int = FRAMES) -> dict:
    """The recipe fields a table-only build is made with (`--set` them to rerun it)."""
    return {"sampling": f"first:{frames}", "crop.size": CROP_SIZE}


def make_table_only(out: Path, videos: int, distinct: int = 64, frames: int = FRAMES) -> BuildDir:
    """A finished build of a DFDC tree of `videos` videos in out/build (tree in out/tree), each
    video with `frames` frame rows (its clip has that many frames)."""
    out, clips = Path(out), Path(out) / "clips"
    tree = make_dfdc(out / "tree", videos, distinct, frames=frames, clips=clips)
    one_each = math.ceil(distinct / (1 + DFDC_FAKES_PER_REAL)) * (1 + DFDC_FAKES_PER_REAL)
    make_dfdc(out / "prototype/tree", one_each, distinct, frames=frames, clips=clips)
    manifest = load_manifest("dfdc", recipe_settings(frames))
    run_build(manifest, out / "prototype/tree", out / "prototype/build", show_progress=False)
    source, build = BuildDir(out / "prototype/build"), BuildDir(out / "build")
    run_index(manifest, tree.root, build.root)
    write_recipe(build, load_recipe(source))  # the keep_frames the prototype's first pass chose
    clip_of = _prototype_keys(build, source)
    split_of = dict(zip(*pq.read_table(build.videos, columns=["key", "split"]).to_pydict().values()))
    for stage in ("frames", "faces", "samples"):
        started = time.perf_counter()
        rows = _replicate(store.read_table(source.table(stage), stage), clip_of, split_of)
        made: set[Path] = set()  # folders made: one mkdir a folder, not a file (3.6 M crops)
        for existing, path in _named_files(stage, rows, clip_of, source, build):
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            if not path.exists():
                os.link(existing, path)
        made_from = make_stage(stage).plan(build, load_recipe(build)).made_from  # as a run stamps its rows
        stamps = pa.array([made_from[key] for key in rows.column("key").to_pylist()], pa.string())
        store.write_table(
            build.table(stage), rows.append_column("made_from", stamps).cast(make_stage(stage).schema)
        )
        print(f"{stage}: {rows.num_rows} rows in {time.perf_counter() - started:.1f} s", flush=True)
    _link_shards(build, source)
    write_build_record(build)
    return build


def _prototype_keys(build: BuildDir, source: BuildDir) -> dict[str, str]:
    """Each video of the build -> the prototype video of the same clip (the same file)."""

    def keys_by_file(where: BuildDir) -> dict[str, int]:
        videos = pq.read_table(where.videos, columns=["key", "path"]).to_pydict()
        return {
            key: (where.video_root() / path).stat().st_ino for key, path in zip(videos["key"], videos["path"])
        }

    prototype_of = {inode: key for key, inode in keys_by_file(source).items()}
    return {key: prototype_of[inode] for key, inode in keys_by_file(build).items()}


def _replicate(table: pa.Table, clip_of: dict[str, str], split_of: dict[str, str]) -> pa.Table:
    """The prototype's rows of each video's clip, with the video's own key, paths and sample names
    (and, for samples, its split), in key order as a merged table holds them."""
    starts: dict[str, list[int]] = {}
    for index, key in enumerate(table.column("key").to_pylist()):
        starts.setdefault(key, []).append(index)
    taken = [(index, key) for key in sorted(clip_of) for index in starts[clip_of[key]]]
    rows = table.take(pa.array([index for index, _ in taken], pa.int64())).drop_columns(["made_from"])
    old, new = rows.column("key").to_pylist(), [key for _, key in taken]
    columns = {"key": new}
    if "path" in rows.column_names:
        columns["path"] = [
            p.replace(f"/{o}/", f"/{n}/") if p else p for p, o, n in zip(rows["path"].to_pylist(), old, new)
        ]
    if "sample" in rows.column_names:
        samples = rows.column("sample").to_pylist()
        columns["sample"] = [
            n + sample[len(o) :] if sample else sample for sample, o, n in zip(samples, old, new)
        ]
        columns["split"] = [split_of[key] for key in new]
    for name, values in columns.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, pa.array(values, pa.string()))
    return rows


def _named_files(stage: str, rows: pa.Table, clip_of: dict, source: BuildDir, build: BuildDir):
    """(prototype file, the build's file) of every file the rows name: crops, each video's samples."""
    if stage == "samples":
        named = set(rows.filter(pc.not_equal(rows.column("sample"), "")).column("key").to_pylist())
        return [(source.samples_file(clip_of[key]), build.samples_file(key)) for key in named]
    pairs = zip(rows.column("key").to_pylist(), rows.column("path").to_pylist())
    return [
        (source.root / path.replace(f"/{key}/", f"/{clip_of[key]}/"), build.root / path)
        for key, path in pairs
        if path
    ]


def _link_shards(build: BuildDir, source: BuildDir) -> None:
    """The real layout's shards, each a hard link to one prototype shard recorded as written."""
    recipe = load_recipe(build)
    shards, layout = planned_shards(build, recipe)
    model = next(source.shards.glob("*.tar"))
    facts = {"sha256": atomic.file_sha256(model), "bytes": model.stat().st_size}
    shutil.rmtree(build.shards, ignore_errors=True)
    build.shards.mkdir(parents=True)
    written, entries = {}, []
    for shard in shards:
        os.link(model, build.shards / shard["name"])
        written[shard["name"]] = facts | _file_identity(build.shards / shard["name"])
        labels = Counter(str(row["label"]) for row in shard["rows"])
        entry = {"name": shard["name"], "split": shard["split"], "samples": len(shard["rows"]), **facts}
        entries.append(entry | {"labels": dict(sorted(labels.items()))})
    atomic.write_json(build.shard_plan, {"layout": layout, "written": written})
    index = _index(entries, recipe, layout)
    atomic.write_json(build.shard_index, index)
    write_loader_files(build, index)
