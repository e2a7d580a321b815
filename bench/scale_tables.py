"""Table-only scale generator (issue 23): a finished DFDC-sized build without decoding its videos.

    python bench/scale_tables.py 120000 /tmp/dfdc-120k            # 120 000 videos, 3.6 M frame rows

The build is bench/common/tables.py's: a DFDC tree of N videos (30 frames each) indexed for real, a
prototype of each distinct clip built for real, and every video's rows, files and shards linked from
its clip's, each table stamped as its stage stamps it, so that a no-op over the build is a real no-op.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common.tables import make_table_only


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
