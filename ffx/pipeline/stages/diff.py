"""`ffx diff BUILD_A BUILD_B`: which videos, samples and shards differ between two builds, and why.

Every row carries what it was made from (`made_from`), so a difference has a reason:
- "only in one": the video is indexed in one build only;
- "input": the video itself differs (path, size, where its links lead) or its decoded pixels do;
- "setting": the same input, made with another recipe field (the fields are named);
- "version": the same input and settings, other ffx or library versions or another
  requirements.lock (build.json);
- "numerics": the same input, settings and versions, other floats (another CPU's kernels, a GPU:
  the machines each stage ran on are shown beside, from build.json's `made_on`).
A stage's difference is charged to the first of these that holds for the video, from the index
down, so a replaced video shows as "input" in every stage after it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffx.errors import BuildError
from ffx.pipeline.engine import store
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import MADE_FROM, load_recipe
from ffx.pipeline.engine.registry import stage_names
from ffx.pipeline.engine.rows import rows_by_key
from ffx.pipeline.recipe.manifest import manifest_changes

REASONS = ("only in one", "input", "setting", "version", "numerics")
VIDEO_FACTS = ("path", "size_bytes", "resolved")  # what a video's identity is made of
CONTENT_HASHES = {"pixels_sha256", "sha256"}  # columns that hash what a row stands for


@dataclass
class StageDiff:
    """Videos of one stage (or the index) whose rows differ, per reason, with the first examples."""

    stage: str
    videos: int = 0  # compared (in either build)
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str, keep: int) -> None:
        self.counts[reason] += 1
        if len(self.examples.setdefault(reason, [])) < keep:
            self.examples[reason].append(example)


@dataclass
class BuildDiff:
    """What differs between two builds: recipe fields, versions, each stage, and the shards."""

    settings: list[tuple[str, Any, Any]]
    versions: dict[str, tuple[str, str]]
    stages: list[StageDiff]
    shards: dict[str, int]  # same, differ, only in A, only in B
    machines: dict[str, tuple[str, str]] = field(default_factory=dict)  # stage -> kernels/devices

    @property
    def identical_shards(self) -> bool:
        return not (self.shards["differ"] or self.shards["only in A"] or self.shards["only in B"])

    def as_json(self) -> dict:
        return {
            "settings": [{"field": name, "a": a, "b": b} for name, a, b in self.settings],
            "versions": {name: {"a": a, "b": b} for name, (a, b) in self.versions.items()},
            "machines": {name: {"a": a, "b": b} for name, (a, b) in self.machines.items()},
            "stages": [
                {"stage": s.stage, "videos": s.videos, "differ": dict(s.counts), "examples": s.examples}
                for s in self.stages
            ],
            "shards": self.shards | {"identical": self.identical_shards},
        }


def diff_builds(build_a: Path | str, build_b: Path | str, examples: int = 3) -> BuildDiff:
    """Compare two builds table by table, from the index down, and their shards."""
    a, b = BuildDir(build_a), BuildDir(build_b)
    for build in (a, b):
        if not build.videos.is_file():
            raise BuildError(
                f"{build} is not a build directory (no {build.videos.name}): run `ffx index` first"
            )
    settings = manifest_changes(load_recipe(a), load_recipe(b))
    records = [_record(build) for build in (a, b)]
    versions = _versions(*records)
    charged: dict[str, str] = {}  # video -> the reason found upstream
    stages = [_diff_videos(a, b, charged, examples)]
    for name in stage_names():
        if a.table(name).is_file() and b.table(name).is_file():
            stages.append(_diff_stage(name, a, b, charged, bool(settings), bool(versions), examples))
    return BuildDiff(settings, versions, stages, _diff_shards(a, b), _machines(*records))


def _record(build: BuildDir) -> dict:
    """The build's build.json; empty when it has none (a build not finished by `ffx build`)."""
    try:
        return json.loads(build.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _versions(record_a: dict, record_b: dict) -> dict[str, tuple[str, str]]:
    """ffx, library and requirements.lock versions that differ between the two build.json."""
    versions = [
        {
            "ffx": record.get("ffx", "unknown"),
            "requirements.lock": record.get("requirements_lock_sha256", "unknown")[:16],
            **record.get("libraries", {}),
        }
        for record in (record_a, record_b)
    ]
    names = sorted(set(versions[0]) | set(versions[1]))
    return {
        name: (versions[0].get(name, "absent"), versions[1].get(name, "absent"))
        for name in names
        if versions[0].get(name) != versions[1].get(name)
    }


def _machines(record_a: dict, record_b: dict) -> dict[str, tuple[str, str]]:
    """Per logged stage run, the CPU kernels and devices it ran on, where the two builds differ
    (what explains "numerics"); hosts are left out, every cluster node has its own."""

    def kinds(record: dict, stage: str) -> str:
        machines = record.get("made_on", {}).get(stage, [])
        named = {" ".join(filter(None, (m.get("cpu_kernels"), m.get("device")))) for m in machines}
        return ", ".join(sorted(named)) or "unknown"

    stages = sorted(set(record_a.get("made_on", {})) | set(record_b.get("made_on", {})))
    found = {stage: (kinds(record_a, stage), kinds(record_b, stage)) for stage in stages}
    return {stage: pair for stage, pair in found.items() if pair[0] != pair[1]}


def _diff_videos(a: BuildDir, b: BuildDir, charged: dict[str, str], keep: int) -> StageDiff:
    found = StageDiff("videos")
    rows = [
        {row["key"]: row for row in store.read_table(build.videos, "`ffx index`").to_pylist()}
        for build in (a, b)
    ]
    for key in sorted(set(rows[0]) | set(rows[1])):
        found.videos += 1
        one, other = rows[0].get(key), rows[1].get(key)
        if one is None or other is None:
            charged[key] = "only in one"
            found.add("only in one", f"{key}: only in {'B' if one is None else 'A'}", keep)
            continue
        changed = [name for name in VIDEO_FACTS if one[name] != other[name]]
        if changed:
            charged[key] = "input"
            found.add("input", f"{key}: {changed[0]} {one[changed[0]]!r} vs {other[changed[0]]!r}", keep)
        elif one != other:
            found.add("setting", f"{key}: {_first_difference(one, other)}", keep)  # label, split, ...
    return found


def _diff_stage(
    name: str, a: BuildDir, b: BuildDir, charged: dict[str, str], settings: bool, versions: bool, keep: int
) -> StageDiff:
    found = StageDiff(name)
    tables = [rows_by_key(store.read_table(build.table(name), f"`ffx {name}`")) for build in (a, b)]
    made = [table.first(MADE_FROM) for table in tables]
    hashed = bool(CONTENT_HASHES & set(tables[0].table.column_names))
    for key in sorted(set(tables[0]) | set(tables[1])):
        found.videos += 1
        if key not in tables[0] or key not in tables[1]:
            charged.setdefault(key, "only in one")
            found.add("only in one", f"{key}: rows only in {'B' if key not in tables[0] else 'A'}", keep)
            continue
        rows = [[_content(row) for row in table[key]] for table in tables]
        if rows[0] == rows[1] and (hashed or made[0][key] == made[1][key]):
            continue  # rows without their files' hash (crops) stand for other files when made otherwise
        reason = charged.get(key)
        if reason is None:
            if made[0][key] != made[1][key]:
                reason = "setting" if settings else "input"  # same settings: an input upstream moved
            else:
                reason = "version" if versions else "numerics"
            charged[key] = reason
        found.add(reason, f"{key}: {_first_row_difference(rows[0], rows[1])}", keep)
    return found


def _content(row: dict) -> dict:
    return {name: value for name, value in row.items() if name != MADE_FROM}


def _first_row_difference(rows_a: list[dict], rows_b: list[dict]) -> str:
    if rows_a == rows_b:
        return "the same rows, made from other settings or inputs (its files may differ)"
    if len(rows_a) != len(rows_b):
        return f"{len(rows_a)} rows vs {len(rows_b)}"
    for one, other in zip(rows_a, rows_b):
        if one != other:
            return f"frame {one.get('frame_index')}: {_first_difference(one, other)}"
    return "rows in another order"


def _first_difference(one: dict, other: dict) -> str:
    name = next(name for name in one if one[name] != other.get(name))
    return f"{name} {_short(one[name])} vs {_short(other.get(name))}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _diff_shards(a: BuildDir, b: BuildDir) -> dict[str, int]:
    """Shards by name: the same sha256, another, or in one build only."""
    indexes = []
    for build in (a, b):
        try:
            index = json.loads(build.shard_index.read_text(encoding="utf-8"))
            indexes.append({entry["name"]: entry["sha256"] for entry in index["shards"]})
        except (OSError, ValueError, KeyError, TypeError):
            indexes.append({})
    names = set(indexes[0]) | set(indexes[1])
    both = [name for name in names if name in indexes[0] and name in indexes[1]]
    return {
        "same": sum(indexes[0][name] == indexes[1][name] for name in both),
        "differ": sum(indexes[0][name] != indexes[1][name] for name in both),
        "only in A": len(set(indexes[0]) - set(indexes[1])),
        "only in B": len(set(indexes[1]) - set(indexes[0])),
    }
