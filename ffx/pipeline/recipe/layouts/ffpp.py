"""FaceForensics++: originals, manipulated methods, official train/val/test.json pair lists."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ffx.errors import InputError
from ffx.pipeline.recipe.layouts.base import Entry, Scan, is_video_file, list_videos, require_dir
from ffx.pipeline.recipe.manifest import FFPP_METHODS, FfppLayout

# The public MCX-API code maps NeuralTextures to 3 as well; here every method has its own class.
LABEL_NAMES = {"pristine": 0, **{method: index + 1 for index, method in enumerate(FFPP_METHODS)}}
SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}


def read_split_files(splits_dir: Path) -> dict[frozenset[str], str]:
    """{frozenset({a, b}): split} from official lists of [a, b] id pairs."""
    pair_split: dict[frozenset[str], str] = {}
    for split, file_name in SPLIT_FILES.items():
        path = splits_dir / file_name
        if not path.is_file():
            raise InputError(f"split file not found: {path} (FF++ needs train.json, val.json, test.json)")
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not valid JSON: {error}") from None
        for position, pair in enumerate(pairs if isinstance(pairs, list) else [None]):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, str) for i in pair)):
                raise InputError(f'{path}: item {position}: expected a pair of ids like ["000", "003"]')
            ids = frozenset(pair)
            if ids in pair_split and pair_split[ids] != split:
                raise InputError(f"{path}: pair {pair} is also in {pair_split[ids]}.json")
            pair_split[ids] = split
    return pair_split


def _id_split(pair_split: dict[frozenset[str], str]) -> dict[str, str]:
    return {video_id: split for ids, split in pair_split.items() for video_id in ids}


def scan(root: Path, layout: FfppLayout, splits_dir: Path | None) -> Scan:
    """Entries for the originals and the chosen methods at the chosen compression."""
    require_dir(root, "dataset root")
    pair_split = read_split_files(splits_dir) if splits_dir is not None else None
    id_split = _id_split(pair_split) if pair_split else None
    entries: list[Entry] = []
    notes: list[str] = []

    sources = ("youtube", "actors") if layout.originals == "both" else (layout.originals,)
    for source in sources:
        videos_dir = root / "original_sequences" / source / layout.compression / "videos"
        if source == "actors" and not videos_dir.is_dir():
            continue
        require_dir(videos_dir, f"FF++ originals ({source}, {layout.compression})")
        for path in list_videos(videos_dir, root):
            video_id = PurePosixPath(path).stem
            identity = f"{source}:{video_id.split('__')[0]}"
            split = None
            if id_split is not None and source == "youtube":
                split = id_split.get(video_id)
                if split is None:
                    raise InputError(f"{path}: id {video_id} is in none of the split files")
            entries.append(Entry(path, "original", "pristine", split=split, identities=(identity,)))

    for method in layout.methods:
        videos_dir = root / "manipulated_sequences" / method / layout.compression / "videos"
        if not videos_dir.is_dir():
            if method in ("FaceShifter", "DeepFakeDetection"):
                notes.append(f"{method}/{layout.compression} not present; skipped")
                continue
            require_dir(videos_dir, f"FF++ {method} ({layout.compression})")
        entries.extend(_fakes(root, videos_dir, method, layout.compression, pair_split))
    return Scan("ffpp", entries, dict(LABEL_NAMES), notes)


def _fakes(root, videos_dir, method, compression, pair_split) -> list[Entry]:
    entries = []
    for path in list_videos(videos_dir, root):
        stem = PurePosixPath(path).stem
        if method == "DeepFakeDetection":
            # 01_02__meeting_serious__YVGY8LOK: actor 01 with actor 02's face; no official split.
            target, _, rest = stem.partition("_")
            source = rest.split("__")[0]
            scene = stem.split("__")[1] if "__" in stem else ""
            original = f"original_sequences/actors/{compression}/videos/{target}__{scene}.mp4"
            identities = (f"actors:{target}", f"actors:{source}")
            split = None
        else:
            target, underscore, source = stem.partition("_")
            if not underscore or not target or not source:
                raise InputError(f"{path}: FF++ fake names are TARGET_SOURCE.mp4 (e.g. 000_003.mp4)")
            original = f"original_sequences/youtube/{compression}/videos/{target}.mp4"
            identities = (f"youtube:{target}", f"youtube:{source}")
            split = None
            if pair_split is not None:
                split = pair_split.get(frozenset((target, source)))
                if split is None:
                    raise InputError(f"{path}: pair [{target}, {source}] is in none of the split files")
        has_original = is_video_file(root / original)
        entries.append(
            Entry(
                path,
                method,
                method,
                split=split,
                identities=identities,
                original_path=original if has_original else None,
            )
        )
    return entries
