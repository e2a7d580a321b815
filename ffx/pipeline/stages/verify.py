"""`ffx verify`: every shard against BUILD/shards/index.json (sha256, size, samples and labels), and the
index against the layout the build's current samples give."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ffx.errors import BuildError
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import load_recipe
from ffx.pipeline.stages.loaders import check_loader_files
from ffx.pipeline.stages.shard import shards_layout


@dataclass
class VerifyReport:
    """What `ffx verify` found: shards checked and one line per problem."""

    shards: int
    samples: int
    problems: list[str]


def verify_shards(build: Path | BuildDir) -> VerifyReport:
    """Recompute every shard's sha256, size, sample and label counts against shards/index.json,
    and check that the index is the layout the build's current tables give."""
    build = BuildDir(build)
    if not build.shard_index.is_file():
        raise BuildError(f"{build.shard_index} not found: run `ffx shard {build}` (all parts) first")
    try:
        index = json.loads(build.shard_index.read_text(encoding="utf-8"))
        entries = index["shards"]
        names = [entry["name"] for entry in entries]
    except (ValueError, KeyError, TypeError):
        raise BuildError(
            f"{build.shard_index} is not a shard index: run `ffx shard {build}` to rewrite it"
        ) from None
    problems, samples = [], 0
    try:
        if shards_layout(build, load_recipe(build)) != index.get("layout_digest"):
            problems.append(
                f"index.json: not the layout of the build's current samples; run `ffx shard {build}`"
            )
    except BuildError as error:
        problems.append(f"out of date: {error}")
    for entry in entries:
        path = build.shards / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        sha256, size = atomic.file_sha256(path), path.stat().st_size
        if sha256 != entry["sha256"] or size != entry["bytes"]:
            problems.append(
                f"{entry['name']}: altered or truncated ({size} bytes, sha256 {sha256[:12]}…; "
                f"index: {entry['bytes']} bytes, {entry['sha256'][:12]}…)"
            )
            continue
        try:
            labels = _shard_labels(path)
        except (tarfile.TarError, OSError, UnicodeDecodeError) as error:
            problems.append(f"{entry['name']}: not a readable tar ({error})")
            continue
        samples += sum(labels.values())
        if sum(labels.values()) != entry["samples"] or dict(sorted(labels.items())) != entry["labels"]:
            problems.append(
                f"{entry['name']}: {sum(labels.values())} samples inside, index says {entry['samples']}"
            )
    if not problems:  # the wids indexes and the card, once the shards themselves are right
        problems += check_loader_files(build, index)
    listed = set(names)
    problems += [
        f"{path.name}: not in index.json"
        for path in sorted(build.shards.glob("*.tar"))
        if path.name not in listed
    ]
    return VerifyReport(len(entries), samples, problems)


def _shard_labels(path: Path) -> Counter[str]:
    """Samples per label, read from the `.cls` members of a shard."""
    labels: Counter[str] = Counter()
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            if member.name.endswith(".cls"):
                labels[archive.extractfile(member).read().decode()] += 1
    return labels
