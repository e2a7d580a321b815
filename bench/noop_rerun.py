"""How a rerun with nothing to do grows with the build: `ffx shard`, `ffx crop`, `ffx extract`
and `ffx status` over generated builds of N videos (one 16-px crop each, made without decoding,
as tests/generated.py writes them), timed in-process (the stage's own time, no start-up).

    python bench/noop_rerun.py 3000 6000 12000

Prints one line per size, then each command's growth exponent between the first and last size.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.generated

from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.stages.status import build_status
from tests.generated import make_cropped_build

COMMANDS = {
    "shard": lambda build: run_shard(build, show_progress=False),
    "crop": lambda build: run_crop(build, show_progress=False),
    "extract": lambda build: run_extract(build, show_progress=False),
    "status": build_status,
}


def no_op_seconds(videos: int, folder: Path) -> dict[str, float]:
    """Seconds of each command's rerun over a shard-complete build of `videos` videos."""
    build = make_cropped_build(folder, videos_per_label=videos // 2, frames=1, side=16)
    run_shard(build, show_progress=False)
    seconds = {}
    for name, command in COMMANDS.items():
        started = time.perf_counter()
        command(build)
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="+", type=int, help="numbers of videos, e.g. 3000 6000 12000")
    sizes = parser.parse_args().sizes
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for videos in sizes:
            results[videos] = no_op_seconds(videos, Path(folder) / str(videos))
            figures = ", ".join(f"{name} {value:.2f} s" for name, value in results[videos].items())
            print(f"{videos} videos: no-op {figures}", flush=True)
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        exponents = {
            name: math.log(results[last][name] / results[first][name]) / math.log(last / first)
            for name in COMMANDS
        }
        print("growth exponent: " + ", ".join(f"{name} {value:.2f}" for name, value in exponents.items()))


if __name__ == "__main__":
    main()
