"""How a no-op rerun grows with the build: `ffx shard`, `crop`, `extract` and `status` in-process (the
stage's own time) over tests/generated.py builds of N videos (one 16-px crop each, made without decoding).

    python bench/noop_rerun.py 3000 6000 12000     # a line per size, then each growth exponent
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (the repository root on sys.path, for tests.generated)

from ffx.pipeline.stages import crop, extract, shard, status
from tests.generated import make_cropped_build

RERUNS = {"shard": shard.run_shard, "crop": crop.run_crop, "extract": extract.run_extract, "status": None}


def main(sizes: list[int]) -> None:
    seconds: dict[int, dict[str, float]] = {size: {} for size in sizes}
    with tempfile.TemporaryDirectory() as folder:
        for videos, figures in seconds.items():
            build = make_cropped_build(
                Path(folder) / str(videos), videos_per_label=videos // 2, frames=1, side=16
            )
            shard.run_shard(build, show_progress=False)
            for name, rerun in RERUNS.items():
                started = time.perf_counter()
                rerun(build, show_progress=False) if rerun else status.build_status(build)
                figures[name] = time.perf_counter() - started
            print(
                f"{videos} videos: no-op " + ", ".join(f"{n} {s:.2f} s" for n, s in figures.items()),
                flush=True,
            )
    first, last = seconds[sizes[0]], seconds[sizes[-1]]
    growth = [f"{n} {math.log(last[n] / first[n]) / math.log(sizes[-1] / sizes[0]):.2f}" for n in RERUNS]
    print("growth exponent: " + ", ".join(growth) if len(sizes) > 1 else "(one size: no growth exponent)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="+", type=int, help="numbers of videos")
    main(parser.parse_args().sizes)
