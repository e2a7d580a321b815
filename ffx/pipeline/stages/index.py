"""`ffx index`: a layout's entries -> BUILD/videos.parquet with keys, labels, groups and splits."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ffx import __version__
from ffx.errors import BuildError, InputError
from ffx.pipeline.engine import atomic, store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.lock import exclusive
from ffx.pipeline.engine.registry import stage_names
from ffx.pipeline.recipe.layouts import Entry, get_layout
from ffx.pipeline.recipe.manifest import (
    Manifest,
    inherit_unset,
    load_manifest,
    manifest_changes,
    manifest_to_toml,
    set_option,
)
from ffx.pipeline.recipe.schema import (
    SPLITS,
    UNKNOWN_LABEL,
    UNKNOWN_LABEL_NAME,
    VIDEOS_SCHEMA,
    is_safe_key,
    key_from_path,
)
from ffx.pipeline.recipe.split import SPLIT_METHOD, identity_groups, seeded_group_split

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


def assign_splits(
    entries: list[Entry], groups: list[str], manifest: Manifest, labels: Sequence[int]
) -> list[str]:
    """Official splits where the layout gave them (unless the recipe says seeded), the seeded
    group split (`seeded_group_split`: by hash, stable) for the rest. `trainval` entries (not in
    the official test list) split between train and val only, at the renormalised fractions
    train/(train+val), val/(train+val). With `split.stratify` = label (auto: binary recipes),
    groups are pooled by the labels their videos hold (`labels`, one per entry), so every split
    with a non-zero fraction gets a group of each pool that has enough groups."""
    source = manifest.split.source
    if source == "official":
        missing = [entry.path for entry in entries if entry.split in (None, TRAINVAL)]
        if len(missing) == len(entries):
            raise InputError(
                "split.source = 'official' but this dataset gave no official split "
                "(pass --splits DIR with the split files)"
            )
    stratify = manifest.split.stratify
    if stratify == "auto":
        stratify = "label" if manifest.labels.mode == "binary" else "none"
    given = [None if source == "seeded" else entry.split for entry in entries]
    train, val, _test = manifest.split.fractions
    pools = {None: manifest.split.fractions, TRAINVAL: (train, val, 0.0)}
    splits = list(given)
    for pool, fractions in pools.items():
        members = [index for index, split in enumerate(given) if split == pool]
        if not members:
            continue
        if not any(fractions):
            raise InputError(
                f"split.fractions give train and val 0, but {len(members)} videos outside the "
                "official test list need one of them"
            )
        held: dict[str, set[int]] = defaultdict(set)
        for index in members:
            held[groups[index]].add(labels[index] if stratify == "label" else 0)
        pool_of = {group: tuple(sorted(label_set)) for group, label_set in held.items()}
        chosen = seeded_group_split(pool_of, fractions, manifest.seed, pool_of=pool_of)
        for index in members:
            splits[index] = chosen[groups[index]]
    return splits


def check_split_method(build: Path) -> None:
    """Refuse to re-index a build split with another `SPLIT_METHOD` once later stages exist:
    its videos could move between splits under the frames, faces and shards made from them."""
    where = BuildDir(build)
    if not where.index.is_file() or not (later := later_stages(where)):
        return
    previous = json.loads(where.index.read_text(encoding="utf-8")).get("split_method")
    if previous != SPLIT_METHOD:
        raise BuildError(
            f"{build} was split with an older method ({previous or 'none recorded'}; this ffx uses "
            f"{SPLIT_METHOD}) and holds {', '.join(later)}; re-indexing would "
            "move videos between splits; use a new --build directory"
        )


def later_stages(build: BuildDir) -> list[str]:
    """The stages after the index that have written anything into the build."""
    return [name for name in stage_names() if build.table(name).exists() or build.parts(name).exists()]


def build_rows(
    scan_entries: list[Entry], dataset: str, names: dict[str, int], manifest: Manifest, root: Path
) -> list[dict]:
    """Index rows sorted by key; key collisions and duplicates are errors."""
    keys: dict[str, str] = {}
    for entry in scan_entries:
        key = entry.key if entry.key and is_safe_key(entry.key) else key_from_path(entry.path)
        if key in keys:
            raise InputError(
                f"key collision: {keys[key]} and {entry.path} both map to key {key!r}; rename one of them"
            )
        assert is_safe_key(key), key
        keys[key] = entry.path
    path_to_key = {path: key for key, path in keys.items()}
    groups = identity_groups([entry.identities or (f"video:{entry.path}",) for entry in scan_entries])
    binary = manifest.labels.mode == "binary"
    labelled = [label_of(entry, names, binary) for entry in scan_entries]
    splits = assign_splits(scan_entries, groups, manifest, [label for label, _ in labelled])
    facts = FileFacts(root)
    rows = []
    for entry, group, split, (label, label_name) in zip(scan_entries, groups, splits, labelled):
        size, resolved = facts.of(entry.path)
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
                "size_bytes": size,
                "resolved": resolved,
            }
        )
    return sorted(rows, key=lambda row: row["key"])


class FileFacts:
    """Each video's size and, when symbolic links lie on its way, the file it leads to: one lstat
    per video (its folder resolved once for all the videos in it), since at DFDC's size 120 000
    videos take two round trips each on a cluster file system otherwise."""

    def __init__(self, root: Path) -> None:
        self.root = os.fspath(root)
        self.real_root = os.path.realpath(root)
        self.real_folders: dict[str, str] = {}

    def of(self, path: str) -> tuple[int, str]:
        """(size in bytes, or -1 when it cannot be read: a link to a missing file stays in the
        index and `ffx extract` gives it a `missing` row; the absolute path it resolves to when
        that is not ROOT/path, else "")."""
        folder, name = os.path.split(path)
        real_folder = self.real_folders.get(folder)
        if real_folder is None:
            real_folder = self.real_folders[folder] = os.path.realpath(os.path.join(self.root, folder))
        real = os.path.join(real_folder, name)
        try:
            facts = os.lstat(real)
            if stat.S_ISLNK(facts.st_mode):
                real = os.path.realpath(real)
                facts = os.stat(real)
            size = facts.st_size
        except OSError:
            size = -1
        return size, real if real != os.path.join(self.real_root, path) else ""


def link_notes(root: Path, rows: list[dict]) -> list[str]:
    """Notes on videos reached through symbolic links: how many lead outside the root (their
    `path` stays the one below the root, which keys come from), and how many lead nowhere."""
    real_root = os.path.realpath(root)
    outside = sum(
        bool(row["resolved"]) and os.path.commonpath([row["resolved"], real_root]) != real_root
        for row in rows
    )
    notes = []
    if outside:
        notes.append(
            f"{outside} videos are reached through symbolic links that lead outside {root}; "
            "they are indexed by their path below it"
        )
    if dangling := sum(row["size_bytes"] < 0 for row in rows):
        notes.append(
            f"{dangling} videos are links to missing files (size_bytes -1); `ffx extract` will "
            "report them as missing"
        )
    return notes


def straddling_groups(rows: list[dict]) -> int:
    """How many groups have videos in more than one split."""
    splits_of = defaultdict(set)
    for row in rows:
        splits_of[row["group"]].add(row["split"])
    return sum(len(splits) > 1 for splits in splits_of.values())


def check_build_matches(build: Path, manifest: Manifest) -> None:
    """Refuse a recipe that disagrees with the build's effective recipe once later stages exist:
    BUILD/manifest.toml is the build's one truth, changed only by a stage's own options."""
    where = BuildDir(build)
    if not where.manifest.is_file():
        return
    if not later_stages(where):
        return
    changes = manifest_changes(load_manifest(where.manifest), manifest)
    if changes:
        field, built, asked = changes[0]
        more = f" (and {len(changes) - 1} more fields)" if len(changes) > 1 else ""
        raise BuildError(
            f"{where.manifest} has {field} = {built!r} but this command asks {asked!r}{more}; add "
            f"{set_option(field, built)} to keep the build's, change it with the stage's own option, "
            "or use a new --build directory"
        )


def run_index(manifest: Manifest, root: Path, build: Path, splits_dir: Path | None = None) -> IndexReport:
    """Scan the dataset under `root` and write `build/videos.parquet` plus the effective manifest."""
    root, build = Path(root).resolve(), Path(build)
    if splits_dir is not None and not Path(splits_dir).is_dir():
        raise InputError(f"split folder not found: {splits_dir}")
    if BuildDir(build).manifest.is_file():
        manifest = inherit_unset(manifest, load_manifest(BuildDir(build).manifest))
    if build.exists():
        check_build_matches(build, manifest)
    scan = get_layout(manifest.layout.kind)(root, manifest.layout, Path(splits_dir) if splits_dir else None)
    if not scan.entries:
        raise InputError(f"empty dataset: no videos found under {root} for layout {manifest.layout.kind!r}")
    names = dict(manifest.labels.names) if manifest.labels.names else scan.label_names
    rows = build_rows(scan.entries, scan.dataset, names, manifest, root)
    notes = list(scan.notes) + link_notes(root, rows)
    if straddled := straddling_groups(rows):
        notes.append(f"{straddled} identity groups appear in more than one split (official lists)")
    table = pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)
    check_split_method(build)
    build.mkdir(parents=True, exist_ok=True)
    where = BuildDir(build)
    by_split = dict(sorted(Counter(row["split"] for row in rows).items(), key=lambda kv: _split_order(kv[0])))
    by_label = dict(sorted(Counter(row["label_name"] for row in rows).items()))
    record = {
        "root": str(root),
        "dataset": scan.dataset,
        "manifest_sha256": manifest.digest(),
        "split_method": SPLIT_METHOD,
        "ffx_version": __version__,
        "videos": len(rows),
        "by_split": by_split,
        "by_label": by_label,
        "notes": notes,
    }
    files = {
        where.videos: store.table_bytes(table),
        where.manifest: manifest_to_toml(manifest).encode(),
        where.index: atomic.json_bytes(record),
    }
    if not all(atomic.holds(path, data) for path, data in files.items()):  # a rerun takes no lock
        with exclusive(where.recipe_lock, wait=True):  # not beside a stage writing the recipe back
            for path, data in files.items():
                atomic.write_bytes(path, data)
    notes += later_stages_note(where)
    return IndexReport(where.videos, len(rows), by_split, by_label, notes)


def later_stages_note(build: BuildDir) -> list[str]:
    """What a re-index left out of date in the stages after it (nothing when they are current)."""
    from ffx.pipeline.engine.currency import stage_currency

    if not build.table("frames").is_file():
        return []
    currency = stage_currency(build, "frames")
    if currency.ok:
        return []
    return [
        f"{currency.missing} videos new, {currency.stale} changed and {currency.gone} gone since "
        f"`ffx extract`: run `ffx build` (or extract, crop and shard) to bring the later stages up to date"
    ]


def _split_order(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)
