"""How a no-op rerun grows with the build: `ffx shard`, `crop`, `extract` and `status` in-process (the
stage's own time) over tests/generated.py builds of N videos (one 16-px crop each, made without decoding).

    python bench/noop_rerun.py 3000 6000 12000     # a line per size, then each growth exponent
"""

from common.figures import exponent, listed, timed
from common.harness import Bench

from ffx.pipeline.stages import crop, extract, shard, status
from tests.generated import make_cropped_build

RERUNS = {"shard": shard.run_shard, "crop": crop.run_crop, "extract": extract.run_extract, "status": None}
BENCH = Bench("noop_rerun", __doc__)
BENCH.parser.add_argument("sizes", nargs="+", type=int, help="numbers of videos")


def run(args, work) -> dict:  # Bench.main's (argparse.Namespace, Path) -> results
    seconds: dict[int, dict[str, float]] = {size: {} for size in args.sizes}
    for videos, figures in seconds.items():
        build = make_cropped_build(work / str(videos), videos_per_label=videos // 2, frames=1, side=16)
        shard.run_shard(build, show_progress=False)
        for name, rerun in RERUNS.items():
            with timed(figures, name):
                rerun(build, show_progress=False) if rerun else status.build_status(build)
        print(f"{videos} videos: no-op {listed(figures, unit=' s')}", flush=True)
    growth = {n: exponent({s: seconds[s][n] for s in (args.sizes[0], args.sizes[-1])}) for n in RERUNS}
    print(f"growth exponent: {listed(growth)}" if len(seconds) > 1 else "(one size: no growth exponent)")
    return {"seconds": seconds, "growth": growth}


if __name__ == "__main__":
    BENCH.main(run, lambda results: None)  # the figures are printed as they come
