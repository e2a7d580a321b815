"""Table-only scale generator (issue 23): a finished DFDC-sized build without decoding its videos.

    python bench/scale_tables.py 120000 /tmp/dfdc-120k            # 120 000 videos, 3.6 M frame rows

A DFDC tree of N videos (hard links to the distinct clips of bench/scale_tree.py, 30 frames each)
is indexed for real. A prototype tree holding each distinct clip once (with its originals, so box
reuse happens as in DFDC) is built for real with `ffx build`. Every video of the big tree then gets
its clip's rows in frames, faces and samples (its own key, paths, sample names, split), and every
file those rows name is a hard link to the prototype's: crops, sample tars, and the shards the
real layout gives (one tar linked under every name, its sha256 recorded as written). Each table is
stamped with the `made_from` that its stage's own plan gives, as a run would, so a no-op over the
build is a real no-op: every check the stages make finds everything current and present.

The shards' contents are the prototype's, not the layout's: `ffx verify`, `ffx export` and
`ffx train` are measured on decoded builds only.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.scale_tree

from bench.scale_tree import DFDC_FAKES_PER_REAL, make_dfdc
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

FRAMES = 30  # frame rows a video, as DFDC's usual sampling (first:30)
CROP_SIZE = 128


def recipe_settings(frames: int = FRAMES) -> dict:
    """The recipe fields a table-only build is made with (`--set` them to rerun it)."""
    return {"sampling": f"first:{frames}", "crop.size": CROP_SIZE}


def make_table_only(out: Path, videos: int, distinct: int = 64, frames: int = FRAMES) -> BuildDir:
    """A finished build of a DFDC tree of `videos` videos in out/build (tree in out/tree), each
    video with `frames` frame rows (its clip has that many frames)."""
    out = Path(out)
    clips = out / "clips"
    tree = make_dfdc(out / "tree", videos, distinct, frames=frames, clips=clips)
    prototype = out / "prototype"
    one_each = math.ceil(distinct / (1 + DFDC_FAKES_PER_REAL)) * (1 + DFDC_FAKES_PER_REAL)
    make_dfdc(prototype / "tree", one_each, distinct, frames=frames, clips=clips)
    manifest = load_manifest("dfdc", recipe_settings(frames))
    run_build(manifest, prototype / "tree", prototype / "build", show_progress=False)
    source = BuildDir(prototype / "build")
    build = BuildDir(out / "build")
    run_index(manifest, tree.root, build.root)
    write_recipe(build, load_recipe(source))  # the keep_frames the prototype's first pass chose
    clip_of = _prototype_keys(build, source)
    for stage in ("frames", "faces", "samples"):
        started = time.perf_counter()
        rows = _replicate(store.read_table(source.table(stage), stage), clip_of, build)
        _link_files(stage, rows, clip_of, source, build)
        _write_stamped(build, stage, rows)
        print(f"{stage}: {rows.num_rows} rows in {time.perf_counter() - started:.1f} s", flush=True)
    _link_shards(build, source)
    write_build_record(build)
    return build


def _prototype_keys(build: BuildDir, source: BuildDir) -> dict[str, str]:
    """Each video of the build -> the prototype video of the same clip (the same file)."""

    def keys_by_file(where: BuildDir) -> dict[str, int]:
        root = where.video_root()
        videos = pq.read_table(where.videos, columns=["key", "path"]).to_pydict()
        return {key: (root / path).stat().st_ino for key, path in zip(videos["key"], videos["path"])}

    prototype_of = {inode: key for key, inode in keys_by_file(source).items()}
    return {key: prototype_of[inode] for key, inode in keys_by_file(build).items()}


def _replicate(table: pa.Table, clip_of: dict[str, str], build: BuildDir) -> pa.Table:
    """The prototype's rows of each video's clip, with the video's own key, paths and sample
    names (and, for samples, its split), in key order as a merged table holds them."""
    keys = table.column("key").to_pylist()
    starts: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        starts.setdefault(key, []).append(index)
    ordered = sorted(clip_of)
    taken, new_keys = [], []
    for key in ordered:
        rows = starts[clip_of[key]]
        taken += rows
        new_keys += [key] * len(rows)
    rows = table.take(pa.array(taken, pa.int64())).drop_columns(["made_from"])
    old_keys = rows.column("key").to_pylist()
    rows = rows.set_column(rows.schema.get_field_index("key"), "key", pa.array(new_keys, pa.string()))
    if "path" in rows.column_names:
        paths = [
            path.replace(f"/{old}/", f"/{new}/") if path else path
            for path, old, new in zip(rows.column("path").to_pylist(), old_keys, new_keys)
        ]
        rows = rows.set_column(rows.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))
    if "sample" in rows.column_names:
        samples = [
            new + sample[len(old) :] if sample else sample
            for sample, old, new in zip(rows.column("sample").to_pylist(), old_keys, new_keys)
        ]
        split_of = dict(zip(*pq.read_table(build.videos, columns=["key", "split"]).to_pydict().values()))
        rows = rows.set_column(
            rows.schema.get_field_index("sample"), "sample", pa.array(samples, pa.string())
        )
        splits = pa.array([split_of[key] for key in new_keys], pa.string())
        rows = rows.set_column(rows.schema.get_field_index("split"), "split", splits)
    return rows


def _link_files(
    stage: str, rows: pa.Table, clip_of: dict[str, str], source: BuildDir, build: BuildDir
) -> None:
    """Hard-link every file the rows name to the prototype's: crops, and each video's samples."""
    if stage == "samples":
        build.samples.mkdir(parents=True, exist_ok=True)
        named = set(rows.filter(pc.not_equal(rows.column("sample"), "")).column("key").to_pylist())
        for key in named:
            _link(source.samples_file(clip_of[key]), build.samples_file(key))
        return
    made = set()
    for key, path in zip(rows.column("key").to_pylist(), rows.column("path").to_pylist()):
        if not path:
            continue
        target = build.root / path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        _link(source.root / path.replace(f"/{key}/", f"/{clip_of[key]}/"), target)


def _link(existing: Path, destination: Path) -> None:
    if not destination.exists():
        os.link(existing, destination)


def _write_stamped(build: BuildDir, stage: str, rows: pa.Table) -> None:
    """Write the stage's merged table, each row stamped with what its stage's plan gives now."""
    made_from = make_stage(stage).plan(build, load_recipe(build)).made_from
    stamps = pa.array([made_from[key] for key in rows.column("key").to_pylist()], pa.string())
    store.write_table(
        build.table(stage), rows.append_column("made_from", stamps).cast(make_stage(stage).schema)
    )


def _link_shards(build: BuildDir, source: BuildDir) -> None:
    """The real layout's shards, each a hard link to one prototype shard recorded as written."""
    recipe = load_recipe(build)
    shards, layout = planned_shards(build, recipe)
    model = next(source.shards.glob("*.tar"))
    facts = {"sha256": atomic.file_sha256(model), "bytes": model.stat().st_size}
    if build.shards.exists():
        shutil.rmtree(build.shards)
    build.shards.mkdir(parents=True)
    written, entries = {}, []
    for shard in shards:
        path = build.shards / shard["name"]
        os.link(model, path)
        written[shard["name"]] = facts | _file_identity(path)
        labels: dict[str, int] = {}
        for row in shard["rows"]:
            labels[str(row["label"])] = labels.get(str(row["label"]), 0) + 1
        entries.append(
            {"name": shard["name"], "split": shard["split"], "samples": len(shard["rows"]), **facts}
            | {"labels": dict(sorted(labels.items()))}
        )
    atomic.write_json(build.shard_plan, {"layout": layout, "written": written})
    index = _index(entries, recipe, layout)
    atomic.write_json(build.shard_index, index)
    write_loader_files(build, index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=int, help="number of videos (30 frame rows each)")
    parser.add_argument("out", type=Path, help="folder for the tree, the prototype and the build")
    parser.add_argument("--distinct", type=int, default=64, help="at least this many distinct clips")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    build = make_table_only(args.out, args.videos, args.distinct)
    print(f"{build}: {args.videos} videos, table-only, in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
