"""BuildDir: the one place that names the files of a build directory.

No pyarrow or pydantic here: worker processes import it cheaply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SHARD_INDEX = "index.json"  # in a shards folder, wherever it lies


@dataclass(frozen=True)
class BuildDir:
    """Paths of one build: the tables every stage reads and writes, and their files."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # The index: what to process, and the effective recipe (the build's one source of settings).
    @property
    def videos(self) -> Path:
        return self.root / "videos.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.toml"

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    def video_root(self, moved: Path | str | None = None) -> Path:
        """Where the videos are: `moved` when given (the dataset mounted at another path than where
        it was indexed), else where they were indexed (index.json's `root`)."""
        if moved:
            return Path(moved)
        return Path(json.loads(self.index.read_text(encoding="utf-8"))["root"])

    # Stage tables and their per-part chunk folders.
    def table(self, stage: str) -> Path:
        """`{stage}.parquet`: `videos`, or a registered stage's table (frames, faces, samples)."""
        return self.root / f"{stage}.parquet"

    def parts(self, stage: str) -> Path:
        """The folder of a stage's unmerged chunks, one sub-folder per part."""
        return self.root / f"{stage}.parts"

    def set_aside(self, stage: str) -> Path:
        """Where a damaged chunk of `stage`'s ledger is moved (its items are redone)."""
        return self.root / "damaged" / stage

    def merge_lock(self, stage: str) -> Path:
        """The lock file of the part that merges `stage`'s table."""
        return self.root / ".locks" / f"{stage}.merge.lock"

    def lock(self, stage: str, part_name: str) -> Path:
        """The lock file a run of `stage` holds for its part."""
        return self.root / ".locks" / f"{stage}.{part_name}.lock"

    # Item outputs: one folder (frames, crops) or file (samples) per video key.
    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def faces(self) -> Path:
        return self.root / "faces"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def samples_file(self, key: str) -> Path:
        return self.root / samples_name(key)

    @property
    def premade_samples(self) -> Path:
        """Samples made by `ffx build`'s pass from the crops' pixels in memory, until `ffx shard`
        takes them (`premade_file`)."""
        return self.samples / ".premade"

    # Shards and the build's record.
    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def shard_index(self) -> Path:
        return self.shards / SHARD_INDEX

    @property
    def shard_plan(self) -> Path:
        """The layout being written: its digest and the sha256 of each shard written so far."""
        return self.shards / ".plan.json"

    @property
    def recipe_lock(self) -> Path:
        """The lock file of a run that writes the recipe (`ffx index`, a stage's changed options)."""
        return self.root / ".locks" / "recipe.lock"

    @property
    def shards_lock(self) -> Path:
        """The lock file of the run that lays the shards out."""
        return self.root / ".locks" / "shards.lock"

    @property
    def record(self) -> Path:
        return self.root / "build.json"

    @property
    def runs_log(self) -> Path:
        return self.root / "runs.jsonl"

    @property
    def qa(self) -> Path:
        return self.root / "qa"

    def memo(self, name: str) -> Path:
        """A fact remembered while the files it was drawn from are unchanged (engine.memo)."""
        return self.root / ".memo" / f"{name}.json"


def samples_name(key: str) -> str:
    """A video's samples file relative to the build."""
    return f"samples/{key}.tar"


def premade_file(samples_file: Path | str) -> Path:
    """Where `ffx build`'s pass leaves a video's samples file (and its `.json` beside it) for
    `ffx shard` to take: samples/.premade/{key}.tar."""
    samples_file = Path(samples_file)
    return samples_file.parent / ".premade" / samples_file.name


def frame_file(key: str, frame_index: int) -> str:
    """A frame's PNG path relative to the build; zero-padded so sorting gives frame order."""
    return f"frames/{key}/{frame_index:06d}.png"


def crop_file(key: str, frame_index: int, track: int, all_faces: bool) -> str:
    """A crop's PNG path relative to the build (`_{track:02d}` added when every face is kept)."""
    name = f"{frame_index:06d}_{track:02d}.png" if all_faces else f"{frame_index:06d}.png"
    return f"faces/{key}/{name}"
