"""Scale generator (issue 23): FF++- and DFDC-shaped trees of any size, hard links to distinct H.264 clips.

    python bench/scale_tree.py ffpp 1000 /tmp/ffpp-1k
    python bench/scale_tree.py dfdc 20000 /tmp/dfdc-20k --per-part 2400

The trees are bench/common/trees.py's: at least --distinct clips written once into OUT/.clips/, every
video a hard link to one of them; FF++ with official-style split lists in OUT/splits/, DFDC in
`dfdc_train_part_K/` folders of --per-part videos with their metadata.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.trees import DFDC_PER_PART, make_dfdc, make_ffpp


def main(argv: list[str] | None = None) -> int:
    """The command line: make the tree and print what it holds and how to build it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=("ffpp", "dfdc"))
    parser.add_argument("videos", type=int, help="number of videos in the tree")
    parser.add_argument("out", type=Path, help="the tree's root (distinct clips in OUT/.clips/)")
    parser.add_argument("--distinct", type=int, default=64, help="at least this many distinct clips")
    parser.add_argument("--frames", type=int, default=3, help="frames per clip")
    parser.add_argument("--per-part", type=int, default=DFDC_PER_PART, help="DFDC videos per part")
    args = parser.parse_args(argv)
    if args.shape == "ffpp":
        tree, recipe = make_ffpp(args.out, args.videos, args.distinct, args.frames), "ffpp-c23"
    else:
        tree, recipe = make_dfdc(args.out, args.videos, args.distinct, args.per_part, args.frames), "dfdc"
    parts, splits = (
        f" in {tree.parts} parts" if tree.parts else "",
        f" --splits {tree.splits}" if tree.splits else "",
    )
    print(f"{tree.root}: {tree.videos} videos{parts}, links to {tree.distinct} distinct clips; {tree.counts}")
    print(f"ffx build {recipe} --root {tree.root} --build BUILD{splits} --set sampling=first:1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
