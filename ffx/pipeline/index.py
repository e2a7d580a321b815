"""`ffx index`: a layout's entries -> BUILD/videos.parquet with keys, labels, groups and splits."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ffx import __version__
from ffx.errors import BuildError, InputError
from ffx.pipeline import store
from ffx.pipeline.layouts import Entry, get_layout
from ffx.pipeline.manifest import Manifest, manifest_to_toml
from ffx.pipeline.schema import (
    SPLITS,
    UNKNOWN_LABEL,
    UNKNOWN_LABEL_NAME,
    VIDEOS_SCHEMA,
    is_safe_key,
    key_from_path,
)
from ffx.pipeline.split import identity_groups, seeded_group_split

VIDEOS_TABLE = "videos.parquet"
MANIFEST_FILE = "manifest.toml"
INDEX_FILE = "index.json"
TRAINVAL = "trainval"  # a layout's mark for "not in the official test list"


@dataclass
class IndexReport:
    """What `ffx index` wrote, with counts the CLI prints."""

    table_path: Path
    videos: int
    by_split: dict[str, int]
    by_label: dict[str, int]
    notes: list[str] = field(default_factory=list)


def label_of(entry: Entry, names: dict[str, int], binary: bool) -> tuple[int, str]:
    """(class index, label name) of an entry, by name or by listed index."""
    if entry.label_name == UNKNOWN_LABEL_NAME and entry.label is None:
        return UNKNOWN_LABEL, UNKNOWN_LABEL_NAME
    index_to_name = {index: name for name, index in sorted(names.items(), key=lambda kv: kv[1])}
    allowed = ", ".join(f"{name}={index}" for name, index in names.items())
    where = entry.origin or entry.path
    if entry.label is not None:
        if entry.label not in index_to_name:
            raise InputError(f"{where}: unknown label {entry.label} (allowed: {allowed})")
        label, label_name = entry.label, index_to_name[entry.label]
    elif entry.label_name in names:
        label, label_name = names[entry.label_name], entry.label_name
    else:
        raise InputError(f"{where}: unknown label {entry.label_name!r} (allowed: {allowed})")
    if binary:
        return (0, "real") if label == 0 else (1, "fake")
    return label, label_name


def assign_splits(entries: list[Entry], groups: list[str], manifest: Manifest) -> list[str]:
    """Official splits where the layout gave them (unless the recipe says seeded), the seeded
    group split for the rest; `trainval` entries split between train and val only."""
    source = manifest.split.source
    if source == "official":
        missing = [entry.path for entry in entries if entry.split in (None, TRAINVAL)]
        if len(missing) == len(entries):
            raise InputError(
                "split.source = 'official' but this dataset gave no official split "
                "(pass --splits DIR with the split files)"
            )
    given = [None if source == "seeded" else entry.split for entry in entries]
    train, val, test = manifest.split.fractions
    pools = {None: (train, val, test), TRAINVAL: (train / (train + val or 1), val / (train + val or 1), 0.0)}
    splits = list(given)
    for pool, fractions in pools.items():
        sizes = Counter(group for group, split in zip(groups, given) if split == pool)
        if sizes:
            chosen = seeded_group_split(dict(sizes), fractions, manifest.seed)
            splits = [chosen[g] if s == pool else out for g, s, out in zip(groups, given, splits)]
    return splits


def build_rows(
    scan_entries: list[Entry], dataset: str, names: dict[str, int], manifest: Manifest, root: Path
) -> list[dict]:
    """Index rows sorted by key; key collisions and duplicates are errors."""
    keys: dict[str, str] = {}
    for entry in scan_entries:
        key = key_from_path(entry.path)
        if key in keys:
            raise InputError(
                f"key collision: {keys[key]} and {entry.path} both map to key {key!r}; rename one of them"
            )
        assert is_safe_key(key), key
        keys[key] = entry.path
    path_to_key = {path: key for key, path in keys.items()}
    groups = identity_groups([entry.identities or (f"video:{entry.path}",) for entry in scan_entries])
    splits = assign_splits(scan_entries, groups, manifest)
    binary = manifest.labels.mode == "binary"
    rows = []
    for entry, group, split in zip(scan_entries, groups, splits):
        label, label_name = label_of(entry, names, binary)
        rows.append(
            {
                "key": path_to_key[entry.path],
                "path": entry.path,
                "dataset": dataset,
                "label": label,
                "label_name": label_name,
                "method": entry.method,
                "split": split,
                "group": group,
                "original_key": path_to_key.get(entry.original_path) if entry.original_path else None,
                "size_bytes": (root / entry.path).stat().st_size,
            }
        )
    return sorted(rows, key=lambda row: row["key"])


def straddling_groups(rows: list[dict]) -> int:
    """How many groups have videos in more than one split."""
    splits_of = defaultdict(set)
    for row in rows:
        splits_of[row["group"]].add(row["split"])
    return sum(len(splits) > 1 for splits in splits_of.values())


def check_build_matches(build: Path, manifest: Manifest) -> None:
    """Refuse to re-index a build whose later stages came from a different manifest."""
    index_path = build / INDEX_FILE
    if not index_path.is_file():
        return
    previous = json.loads(index_path.read_text(encoding="utf-8")).get("manifest_sha256")
    later_stages = [
        p.name for p in build.iterdir() if p.name not in (VIDEOS_TABLE, INDEX_FILE, MANIFEST_FILE)
    ]
    if previous != manifest.digest() and later_stages:
        raise BuildError(
            f"{build} was built from a different manifest (sha256 {previous[:12]}…) and "
            f"holds {', '.join(sorted(later_stages))}; use a new --build directory"
        )


def run_index(manifest: Manifest, root: Path, build: Path, splits_dir: Path | None = None) -> IndexReport:
    """Scan the dataset under `root` and write `build/videos.parquet` plus the effective manifest."""
    root, build = Path(root).resolve(), Path(build)
    if splits_dir is not None and not Path(splits_dir).is_dir():
        raise InputError(f"split folder not found: {splits_dir}")
    if build.exists():
        check_build_matches(build, manifest)
    scan = get_layout(manifest.layout.kind)(root, manifest.layout, Path(splits_dir) if splits_dir else None)
    if not scan.entries:
        raise InputError(f"empty dataset: no videos found under {root} for layout {manifest.layout.kind!r}")
    names = dict(manifest.labels.names) if manifest.labels.names else scan.label_names
    rows = build_rows(scan.entries, scan.dataset, names, manifest, root)
    notes = list(scan.notes)
    if straddled := straddling_groups(rows):
        notes.append(f"{straddled} identity groups appear in more than one split (official lists)")
    table = pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)
    build.mkdir(parents=True, exist_ok=True)
    store.write_table(build / VIDEOS_TABLE, table)
    store.write_bytes(build / MANIFEST_FILE, manifest_to_toml(manifest).encode())
    by_split = dict(sorted(Counter(row["split"] for row in rows).items(), key=lambda kv: _split_order(kv[0])))
    by_label = dict(sorted(Counter(row["label_name"] for row in rows).items()))
    store.write_json(
        build / INDEX_FILE,
        {
            "root": str(root),
            "dataset": scan.dataset,
            "manifest_sha256": manifest.digest(),
            "ffx_version": __version__,
            "videos": len(rows),
            "by_split": by_split,
            "by_label": by_label,
            "notes": notes,
        },
    )
    return IndexReport(build / VIDEOS_TABLE, len(rows), by_split, by_label, notes)


def _split_order(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)
