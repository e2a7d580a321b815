"""FF++- and DFDC-shaped trees of any size, hard links to distinct H.264 clips (issue 23): what
bench/scale_tree.py makes, and the inputs of bench/scale.py, bench/scale_tables.py and bench/soak.py.

The distinct clips (at least `distinct`) are written once into OUT/.clips/, each its own seed and
phase (no two share their bytes: checked); every video is a hard link to one of them. A fake has its
original's phase (pixel-aligned, as FF++ and DFDC fakes are) and its own seed. FF++: N videos are
M = 2 * ceil(N / 10) originals (ids paired 0-1, 2-3, ...) and N - M fakes over the four methods in
turn, each pair both ways (N / 5 per class at N a multiple of 10), official-style split lists in
OUT/splits/. DFDC: `dfdc_train_part_K/` folders of `per_part` videos with their metadata.json, about
one real for every five fakes, every fake naming a real of its own part.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ffx.synthetic import portrait_frames, write_h264_video

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
DFDC_FAKES_PER_REAL, DFDC_PER_PART = 5, 2400  # DFDC's 119 154 training videos lie in 50 parts
SPLIT_SHARES = (("val", 0.14), ("test", 0.14))  # FF++'s official 720 / 140 / 140 pairs
CLIPS, NAME_LETTERS = ".clips", 10  # DFDC file names: ten lower-case letters


@dataclass
class Tree:
    """A generated tree: its root, videos, distinct clips, count per class, split lists (FF++), parts."""

    root: Path
    videos: int
    distinct: int
    counts: dict[str, int]
    splits: Path | None = None
    parts: int = 0


@dataclass
class ClipPool:
    """Distinct clips of the bundled portrait, each written once into `folder` on first use."""

    folder: Path
    frames: int = 3
    width: int = 128
    height: int = 160
    digests: dict[str, str] = field(default_factory=dict)  # clip name -> sha256 of its bytes

    def clip(self, name: str, number: int, fake: bool, seed: int) -> Path:
        """The clip `name` (written now if missing), its phase 0.9 rad a number apart, as the demo's."""
        path = self.folder / f"{name}.mp4"
        if name not in self.digests:
            if not path.is_file():
                phase = (number * 0.9) % (2 * math.pi)
                write_h264_video(
                    path, portrait_frames(self.frames, phase, fake, self.width, self.height, seed)
                )
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in self.digests.values():
                raise RuntimeError(f"{path} has the same bytes as another clip; vary its seed")
            self.digests[name] = digest
        return path

    def real(self, number: int) -> Path:
        return self.clip(f"real-{number:03d}", number, False, number)

    def fake(self, number: int, variant: int) -> Path:
        """Fake `variant` of real clip `number`: the same pan, its own seed."""
        return self.clip(f"fake-{number:03d}-{variant}", number, True, 100_000 * (variant + 1) + number)

    def link(self, clip: Path, destination: Path) -> None:
        """Lay `destination` out as a hard link to `clip` (replacing whatever was there)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists() or destination.is_symlink():
            if os.path.samestat(destination.stat(), clip.stat()):
                return
            destination.unlink()
        os.link(clip, destination)


def make_ffpp(
    out: Path, videos: int, distinct: int = 64, frames: int = 3, width: int = 128, height: int = 160
) -> Tree:
    """An FF++ c23 tree of exactly `videos` videos under `out`, split lists in out/splits/."""
    if videos < 2:
        raise ValueError("an FF++ tree needs at least 2 videos (one pair of originals)")
    out, counts = Path(out), Counter()
    pool = ClipPool(out / CLIPS, frames, width, height)
    real_clips = math.ceil(distinct / (1 + len(FFPP_METHODS)))  # each with one fake per method
    originals = 2 * math.ceil(videos / 10)  # at most `videos`, and 4 fakes each leave room for the rest
    ids = [f"{number:0{max(3, len(str(originals - 1)))}d}" for number in range(originals)]
    for number, video_id in enumerate(ids):
        pool.link(
            pool.real(number % real_clips), out / f"original_sequences/youtube/c23/videos/{video_id}.mp4"
        )
        counts["pristine"] += 1
    # Fake slots: pair 0-1 as 0_1 then 1_0, and so on, each with every method in turn.
    pairs = ((d, d + 1 - 2 * (d % 2)) for d in range(originals))
    slots = ((method, target, source) for target, source in pairs for method in FFPP_METHODS)
    for _, (method, target, source) in zip(range(videos - counts["pristine"]), slots):
        destination = out / f"manipulated_sequences/{method}/c23/videos/{ids[target]}_{ids[source]}.mp4"
        pool.link(pool.fake(target % real_clips, FFPP_METHODS.index(method)), destination)
        counts[method] += 1
    splits = write_ffpp_splits(out / "splits", [(ids[a], ids[a + 1]) for a in range(0, originals, 2)])
    return Tree(out, sum(counts.values()), len(pool.digests), dict(counts), splits)


def write_ffpp_splits(folder: Path, pairs: list[tuple[str, str]]) -> Path:
    """train/val/test.json lists of id pairs, as FF++ ships them: 14 % val, 14 % test (at least one
    pair each from 3 pairs), train the rest, in order."""
    val, test = (max(1, round(len(pairs) * share)) if len(pairs) >= 3 else 0 for _, share in SPLIT_SHARES)
    train = len(pairs) - val - test
    folder.mkdir(parents=True, exist_ok=True)
    for split, chunk in (
        ("train", pairs[:train]),
        ("val", pairs[train : train + val]),
        ("test", pairs[train + val :]),
    ):
        (folder / f"{split}.json").write_text(json.dumps([list(pair) for pair in chunk]))
    return folder


def dfdc_name(number: int) -> str:
    """A DFDC-like file name of ten letters, distinct for every `number` (a bijection mod 26^10)."""
    value = (number * 87_246_063_199_851 + 4_242_424_242) % 26**NAME_LETTERS  # odd, not a multiple of 13
    letters = []
    for _ in range(NAME_LETTERS):
        value, digit = divmod(value, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(letters) + ".mp4"


def make_dfdc(out: Path, videos: int, distinct: int = 64, per_part: int = DFDC_PER_PART, frames: int = 3,
              width: int = 128, height: int = 160, clips: Path | None = None) -> Tree:  # fmt: skip
    """A DFDC tree of exactly `videos` videos under `out`, parts of `per_part` videos each with its
    metadata.json; its clips in `clips` (default out/.clips/: trees naming one folder share clips)."""
    if videos < 1 or per_part < 1:
        raise ValueError("a DFDC tree needs at least 1 video and 1 video per part")
    out, counts, number, reals_so_far = Path(out), Counter(), 0, 0
    pool = ClipPool(Path(clips) if clips else out / CLIPS, frames, width, height)
    real_clips = math.ceil(distinct / (1 + DFDC_FAKES_PER_REAL))
    for part, start in enumerate(range(0, videos, per_part)):
        size, folder, metadata = min(per_part, videos - start), out / f"dfdc_train_part_{part}", {}
        reals = math.ceil(size / (1 + DFDC_FAKES_PER_REAL))
        names = [dfdc_name(number + n) for n in range(size)]
        for n, name in enumerate(names):  # the reals first, then the fakes going round the part's reals
            fake = n - reals
            if fake < 0:
                pool.link(pool.real((reals_so_far + n) % real_clips), folder / name)
            else:
                pool.link(pool.fake((reals_so_far + fake % reals) % real_clips, fake // reals), folder / name)
            source = names[fake % reals] if fake >= 0 else None
            metadata[name] = {"label": "FAKE" if source else "REAL", "split": "train", "original": source}
        number, reals_so_far = number + size, reals_so_far + reals
        counts["real"], counts["fake"] = counts["real"] + reals, counts["fake"] + size - reals
        (folder / "metadata.json").write_text(json.dumps(metadata))
    return Tree(out, number, len(pool.digests), dict(counts), parts=part + 1)
