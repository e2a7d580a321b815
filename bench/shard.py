"""Benchmark of the `ffx shard` stage and the `ffx.data` loader, each against a baseline.

Inputs (not timed): a generated build with face crops, made without extract or crop. A
`real/` + `fake/` tree of placeholder .mp4 files is indexed with the `folder` recipe, then every
video gets 512x512 RGB crops in BUILD/faces/{key}/{frame:06d}.png (PNG level 1, as `ffx crop`
writes them) and a frames.parquet and a faces.parquet row each, stamped with the `made_from` the
stages' plans give, as tests/generated.py writes them. The crops are
frames of the real clips in ../shared/media/videos (a centred square, resized to 512), so the
PNGs compress like real face crops; without the clips (or with --no-media) they are smooth
random textures. Default: 40 videos x 10 crops = 400 samples.

Shard writing, on the same build:

- stage: `run_shard(build, spaces=..., max_count=...)` then `write_build_record(build)` on a
  fresh copy of the build, default workers (all cores), as the CLI runs them: every crop
  converted and PNG-encoded in the four colour spaces, then packed, then BUILD/build.json.
  Samples/s, and MB/s of shard output;
- packing: `write_shards(build)` alone after deleting BUILD/shards, the samples being
  encoded already (BUILD/samples/{key}.tar): MB/s of shard output;
- floor: GNU tar, `tar -cf out.tar -C DIR .`, then an fsync of out.tar (ffx fsyncs each shard
  before its rename). DIR is BUILD/samples: the very bytes the packer reads, as a few large
  files, written out as one archive of the same size (plus one header per file), so tar does
  the same reads and writes as the packer minus the layout, the seeks and the hashing; that is
  the fair floor. Two more lines for reference: the same tar without the fsync, and tar over the
  shards' members extracted to one folder (the same output bytes, but one small file per member,
  which is what packing loose files would cost).

Loader, on the train split (several shards, at least two per loader worker):

- ffx: `shard_loader(shard_dataset(BUILD/shards, "train", spaces=(rgb, lab, hsv, ycbcr),
  crop=448, train=True), batch_size, workers=2)` iterated to the end; uint8 tensors of 12
  channels;
- baseline: the ImageFolder-style way of the public MCX-API code over the loose crop PNGs of
  the same train samples (faces.parquet joined with videos.parquet, split train): a torch
  Dataset whose items are cv2.imread -> BGR to RGB -> Lab, HSV and YCrCb with cv2.cvtColor ->
  random 448 crop -> torchvision's ToTensor (float32 / 255, 12 channels), in a torch DataLoader
  (shuffle, same batch size, num_workers=2);
- the same two with RGB only (ffx still reads its 4-space shards but decodes only rgb).

Every timed part reports wall seconds, the CPU seconds it used (this process and its reaped
worker processes; a loader's wall time stops at its last batch, its CPU time once its workers
are joined) and the CPU seconds other processes used meanwhile (a large figure means a busy
machine: use --repeats to keep each part's fastest round; a small one on the parts that write
files is the kernel writing their pages back). Before each timed part the benchmark
waits until no pytest and no other bench/ script runs (checking every 10 s, for at most
--max-wait seconds). Every input is read once before timing (and loader imports done) and dirty
pages are synced before each timed part.

Run from the repository root:

    .venv/bin/python bench/shard.py            # defaults: 40 videos x 10 crops, temporary work dir
    .venv/bin/python bench/shard.py --help

The figures are printed and written to bench/results/shard-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from common import (
    CROP_SIDE,
    MEDIA_DIR,
    TRAIN_SHARDS,
    Quiet,
    Stopwatch,
    Timing,
    add_max_wait_option,
    add_shard_size_option,
    add_workdir_options,
    arguments_record,
    environment,
    interleaved,
    media_videos,
    print_environment,
    print_machine_load,
    print_timings,
    run_and_report,
    square_crop,
    texture,
    tree_bytes,
    verdict,
    warm_page_cache,
)

SPACES = ("rgb", "lab", "hsv", "ycbcr")
TARGET_LOADER_RATIO = 1.5
TARGET_WORKER_MS = 6.0  # CPU per sample in one loader worker with the colour on the device
TARGET_PER_CPU_RATIO = 2.5  # 4-space samples per CPU-second, colour on the device vs the baseline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--videos", type=int, default=40, help="videos, half real and half fake (default: 40)"
    )
    parser.add_argument("--crops-per-video", type=int, default=10, help="face crops per video (default: 10)")
    add_shard_size_option(parser)
    parser.add_argument(
        "--shard-workers", type=int, default=None, help="run_shard's workers (default: all cores, as the CLI)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="loader batch size (default: 32)")
    parser.add_argument("--loader-workers", type=int, default=2, help="loader worker processes (default: 2)")
    parser.add_argument(
        "--crop", type=int, default=448, help="random crop side in the loaders (default: 448)"
    )
    parser.add_argument(
        "--no-media", action="store_true", help=f"random textures instead of {MEDIA_DIR} clips"
    )
    add_workdir_options(parser, "the build and outputs")
    add_max_wait_option(parser, default=600.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of the timed parts, interleaved; each part's fastest round is reported (default: 1)",
    )
    args = parser.parse_args(argv)
    if min(args.videos, args.crops_per_video, args.batch_size, args.crop, args.repeats) < 1:
        parser.error("--videos, --crops-per-video, --batch-size, --crop and --repeats must be >= 1")
    if args.loader_workers < 0 or (args.shard_size is not None and args.shard_size < 1):
        parser.error("--loader-workers must be >= 0 and --shard-size >= 1")
    if args.crop > CROP_SIDE:
        parser.error(f"--crop must be at most {CROP_SIDE}, the crops' side")
    return args


# ---------------------------------------------------------------------------------------------
# Inputs (not timed)


def index_tree(work: Path, videos: int) -> tuple[Path, list[dict]]:
    """A folder tree of placeholder clips (real/ and fake/), indexed into a fresh build; the
    build and its videos.parquet rows in key order."""
    from ffx.pipeline.engine.builddir import BuildDir
    from ffx.pipeline.recipe.manifest import load_manifest
    from ffx.pipeline.stages.index import run_index

    root, build = work / "dataset", work / "base-build"
    for number in range(videos):
        path = root / ("real" if number % 2 == 0 else "fake") / f"clip{number // 2:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0")
    run_index(load_manifest("folder"), root, build)
    rows = pq.read_table(BuildDir(build).videos).to_pylist()
    return build, sorted(rows, key=lambda row: row["key"])


def clip_frames(clip: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames of a clip (decode order) as CROP_SIDE squares."""
    import av

    found = {}
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found[index] = square_crop(frame.to_ndarray(format="rgb24"), CROP_SIDE)
            if len(found) == len(wanted):
                break
    return found


def frame_count(clip: Path) -> int:
    import av

    with av.open(str(clip)) as container:
        frames = container.streams.video[0].frames
        return frames or sum(1 for _ in container.decode(video=0))


def face_row(key: str, frame: int, path: str) -> dict:
    """A faces.parquet row of one main-face crop (as tests/pipeline/test_shard.py writes them)."""
    return {
        "key": key,
        "frame_index": frame,
        "track": 0,
        "x1": 180.0,
        "y1": 150.0,
        "x2": 420.0,
        "y2": 430.0,
        "crop_x1": 100,
        "crop_y1": 80,
        "crop_x2": 500,
        "crop_y2": 480,
        "prob": 0.999,
        "landmarks": [250.0, 260.0, 350.0, 260.0, 300.0, 320.0, 260.0, 380.0, 340.0, 380.0],
        "n_faces": 1,
        "box_source": "detected",
        "path": path,
        "status": "ok",
        "error": "",
    }


def write_crops(build: Path, videos: list[dict], crops: int, clips: list[Path]) -> str:
    """Every video's crop PNGs, frames.parquet and faces.parquet; where the pixels came from, in words.

    Video number v takes its crops from clip v mod len(clips), frames spread evenly over the clip
    in order, so each video's crops are successive frames of one scene, as real crops are."""
    from ffx.pipeline.media.images import encode_png
    from tests.generated import frame_row, write_stamped  # stamped as a real run stamps them

    targets = [(video["key"], frame) for video in videos for frame in range(crops)]
    pixels: dict[tuple[str, int], np.ndarray] = {}
    if clips:
        for number, clip in enumerate(clips):
            mine = [target for index, target in enumerate(targets) if (index // crops) % len(clips) == number]
            total = frame_count(clip)
            chosen = [position * total // len(mine) for position in range(len(mine))] if mine else []
            decoded = clip_frames(clip, set(chosen))
            for target, index in zip(mine, chosen):
                pixels[target] = decoded.get(index, decoded[max(decoded)])
        origin = f"frames of {', '.join(clip.name for clip in clips)}"
    else:
        origin = "smooth random textures"
    write_stamped(build, "frames", [frame_row(key, frame, CROP_SIDE) for key, frame in targets])
    rows = []
    for number, (key, frame) in enumerate(targets):
        path = f"faces/{key}/{frame:06d}.png"
        (build / path).parent.mkdir(parents=True, exist_ok=True)
        rgb = pixels.pop((key, frame)) if clips else texture(number, CROP_SIDE)
        (build / path).write_bytes(encode_png(rgb, 1))
        rows.append(face_row(key, frame, path))
    write_stamped(build, "faces", rows)
    return origin


def train_items(build: Path) -> list[tuple[str, int]]:
    """(crop PNG path, label) of every train crop: faces.parquet joined with videos.parquet."""
    from ffx.pipeline.engine.builddir import BuildDir

    videos = {row["key"]: row for row in pq.read_table(BuildDir(build).videos).to_pylist()}
    faces = pq.read_table(BuildDir(build).table("faces")).to_pylist()
    return [
        (str(build / row["path"]), videos[row["key"]]["label"])
        for row in faces
        if row["status"] == "ok" and row["path"] and videos[row["key"]]["split"] == "train"
    ]


def extract_members(shards_dir: Path, out_dir: Path) -> int:
    """Every member of every shard as a file in one folder; the member count."""
    out_dir.mkdir(parents=True)
    members = 0
    for shard in sorted(shards_dir.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive:
                (out_dir / member.name).write_bytes(archive.extractfile(member).read())
                members += 1
    return members


# ---------------------------------------------------------------------------------------------
# Timed parts


def _reap_workers() -> None:
    """Join finished worker processes (so their CPU time counts) once their loader is gone."""
    gc.collect()
    for child in multiprocessing.active_children():
        child.join(timeout=10)


def time_stage(base: Path, build: Path, settings: dict, workers: int | None) -> tuple[Timing, dict]:
    """`run_shard` (`settings`: its recipe options) then, once merged, `write_build_record`, as the
    CLI runs them, on a fresh copy of the base build (copy not timed); the timing and its report."""
    from ffx.pipeline.stages.record import write_build_record
    from ffx.pipeline.stages.shard import run_shard

    shutil.copytree(base, build)
    stopwatch = Stopwatch()
    report = run_shard(build, workers=workers, show_progress=False, **settings)
    if report.merged:
        write_build_record(build)
    samples, size = report.rows_by_status.get("ok", 0), _shard_bytes(build)
    timing = stopwatch.timing("ffx run_shard (encode + pack)", samples, "samples", size)
    if not report.merged or report.failed:
        sys.exit(f"run_shard did not finish cleanly: merged {report.merged}, failed {report.failed}")
    summary = {
        "samples": dict(report.rows_by_status),
        "seconds": report.seconds,
        "shards": len(report.extra["index"]["shards"]),
        "shards_written": report.counts["shards written"],
    }
    return timing, summary


def time_packing(build: Path) -> Timing:
    """`write_shards` alone (settings from the build's recipe), BUILD/shards deleted first (not timed)."""
    from ffx.pipeline.engine.builddir import BuildDir
    from ffx.pipeline.stages.shard import write_shards

    shutil.rmtree(BuildDir(build).shards)
    stopwatch = Stopwatch()
    index, _written = write_shards(build, show_progress=False)
    size = sum(totals["bytes"] for totals in index["splits"].values())
    samples = sum(totals["samples"] for totals in index["splits"].values())
    return stopwatch.timing("ffx write_shards (pack only)", samples, "samples", size)


def time_tar(name: str, source: Path, out: Path, samples: int, fsync: bool) -> Timing:
    """GNU tar of a folder into one archive (and an fsync of it); the archive removed first."""
    out.unlink(missing_ok=True)
    stopwatch = Stopwatch()
    subprocess.run(["tar", "-cf", str(out), "-C", str(source), "."], check=True)
    if fsync:
        with open(out, "rb") as handle:
            os.fsync(handle.fileno())
    return stopwatch.timing(name, samples, "samples", out.stat().st_size)


def _tar_round(_number: int, **arguments) -> Timing:
    return time_tar(**arguments)


def warm_imports() -> None:
    """Import what the loaders use before timing them (torchvision alone takes seconds)."""
    import torchvision.transforms  # noqa: F401
    import webdataset  # noqa: F401

    import ffx.data  # noqa: F401

    if colour_on_device_missing() is None:  # its tables are made once per device, as a run pays
        from ffx.model.colour import rgb_to_spaces

        rgb_to_spaces(torch.zeros((1, 3, 2, 2), dtype=torch.uint8), SPACES)


def colour_on_device_missing() -> str | None:
    """Why this ffx cannot make the colour on the device (issue 14's ffx/model/colour.py and the
    loader's colour_on), or None."""
    import inspect

    from ffx.data import shard_dataset

    try:
        from ffx.model.colour import rgb_to_spaces  # noqa: F401
    except ImportError:
        return "ffx has no ffx/model/colour.py (rgb_to_spaces)"
    if "colour_on" not in inspect.signature(shard_dataset).parameters:
        return "ffx.data.shard_dataset takes no colour_on"
    return None


def time_ffx_loader(
    shards: Path, spaces: tuple[str, ...], args: argparse.Namespace, size: int, colour_on: str | None = None
) -> Timing:
    """ffx.data's train loader iterated to the end. With `colour_on` "device", the workers decode
    RGB alone and this process makes `spaces` from each batch with rgb_to_spaces (on the CPU here:
    its CPU time is counted, as a GPU would do it in the train step)."""
    from ffx.data import shard_dataset, shard_loader

    options = {} if colour_on is None else {"colour_on": colour_on}
    stopwatch = Stopwatch()
    dataset = shard_dataset(shards, "train", spaces=spaces, crop=args.crop, train=True, **options)
    loader = shard_loader(dataset, batch_size=args.batch_size, workers=args.loader_workers)
    samples, batch, channels = 0, None, 0
    for batch in loader:
        images = batch["image"]
        if colour_on == "device":
            from ffx.model.colour import rgb_to_spaces

            images = rgb_to_spaces(images, spaces)
        samples += images.shape[0]
        channels = images.shape[1]
    stopwatch.stop()
    del loader, dataset, batch
    _reap_workers()
    where = f", colour on the {colour_on}" if colour_on else ""
    name = f"ffx shard_loader ({','.join(spaces)}{where})"
    return stopwatch.timing(name, samples, "samples", size, channels=channels)


def time_worker_samples(shards: Path, args: argparse.Namespace, colour_on: str) -> Timing:
    """What one loader worker does, in this process with one torch thread (as in a worker): the
    train split's samples decoded and cropped, RGB alone with `colour_on` "device", the four
    spaces with "host"; its CPU seconds per sample are the figure."""
    from ffx.data import shard_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stopwatch = Stopwatch()
        dataset = shard_dataset(
            shards, "train", spaces=SPACES, crop=args.crop, train=True, colour_on=colour_on
        )
        samples = sum(1 for _sample in dataset)
        return stopwatch.timing(f"one worker, 1 thread, colour on the {colour_on}", samples, "samples")
    finally:
        torch.set_num_threads(threads)


class CropFolder(torch.utils.data.Dataset):
    """The public ImageFolder-style dataset over loose crop PNGs: colour spaces on the fly."""

    def __init__(self, items: list[tuple[str, int]], crop: int, all_spaces: bool):
        from torchvision import transforms

        self.items, self.crop, self.all_spaces = items, crop, all_spaces
        self.to_tensor = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        if self.all_spaces:
            lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
            image = np.concatenate([image, lab, hsv, ycrcb], axis=2)
        top = random.randint(0, image.shape[0] - self.crop)
        left = random.randint(0, image.shape[1] - self.crop)
        return self.to_tensor(image[top : top + self.crop, left : left + self.crop]), label


def time_baseline_loader(items: list[tuple[str, int]], all_spaces: bool, args, size: int) -> Timing:
    """The public way: a map-style Dataset in a torch DataLoader, iterated to the end."""
    stopwatch = Stopwatch()
    dataset = CropFolder(items, args.crop, all_spaces)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.loader_workers
    )
    samples, images = 0, None
    for images, _labels in loader:
        samples += images.shape[0]
    stopwatch.stop()
    del loader, dataset, images
    _reap_workers()
    spaces = "rgb,lab,hsv,ycrcb" if all_spaces else "rgb"
    return stopwatch.timing(f"baseline DataLoader ({spaces})", samples, "samples", size)


# ---------------------------------------------------------------------------------------------
# Report


def versions() -> dict:
    """The environment with the loaders' libraries' and GNU tar's versions."""
    import torchvision
    import webdataset

    tar = subprocess.run(["tar", "--version"], capture_output=True, text=True, check=False)
    return environment(
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        webdataset=getattr(webdataset, "__version__", "unknown"),
        cv2=cv2.__version__,
        numpy=np.__version__,
        tar=tar.stdout.split("\n", 1)[0],
    )


def print_report(results: dict) -> None:
    inputs, index = results["inputs"], results["index"]
    print_environment(results["environment"])
    print(
        f"Inputs: {inputs['videos']} videos x {inputs['crops_per_video']} crops = "
        f"{inputs['samples']} samples of {CROP_SIDE}x{CROP_SIDE} ({inputs['origin']});\n"
        f"  crop PNGs {inputs['crop_bytes'] / 1e6:.1f} MB "
        f"({inputs['crop_bytes'] / inputs['samples'] / 1e3:.0f} kB each); "
        f"videos per split {inputs['by_split']}"
    )
    settings = results["settings"]
    print(
        f"Shard settings: spaces {','.join(settings['spaces'])}, png_level {settings['png_level']}, "
        f"max_count {settings['max_count']}, seed {settings['seed']}"
    )
    print("shards/index.json totals:")
    for split, totals in index["splits"].items():
        print(
            f"  {split:<6}{totals['shards']:>3} shards {totals['samples']:>6} samples "
            f"{totals['bytes'] / 1e6:>9.1f} MB  labels {totals['labels']}"
        )
    print(
        f"  all   {index['shards']:>3} shards {index['samples']:>6} samples {index['bytes'] / 1e6:>9.1f} MB "
        f"({index['bytes'] / max(index['samples'], 1) / 1e6:.2f} MB/sample)"
    )
    if results["arguments"]["repeats"] > 1:
        print(f"\nFastest of {results['arguments']['repeats']} rounds per part.")

    writing = results["writing"]
    print_timings("Shard writing (samples/s):", [writing["stage"]], rate="samples/s", mb=True)
    stage = writing["stage"]
    print(
        f"  whole stage: {stage['rate']:.1f} samples/s, {stage['mb_per_second']:.1f} MB/s of "
        f"shard output; run_shard's own seconds {writing['stage_report']['seconds']:.2f}"
    )
    print_timings(
        "Packing vs GNU tar (MB/s of output):", [writing["packing"], *writing["tar"]], rate="MB/s", mb=True
    )
    ratios = writing["ratios"]
    print(
        f"  packing {writing['packing']['mb_per_second']:.1f} MB/s, "
        f"tar {writing['tar'][0]['mb_per_second']:.1f} MB/s (samples/*.tar + fsync): "
        f"packing / tar = {ratios['packing_over_tar']:.2f}"
    )
    print(
        f"  packing / tar without fsync = {ratios['packing_over_tar_no_fsync']:.2f}; "
        f"packing / tar of {writing['members']} loose member files = {ratios['packing_over_tar_members']:.2f}"
    )

    loader = results["loader"]
    print_timings(
        f"Loader, train split ({loader['train_samples']} samples, {loader['train_shards']} shards, batch "
        f"{results['arguments']['batch_size']}, {results['arguments']['loader_workers']} workers, crop "
        f"{results['arguments']['crop']}):",
        loader["timings"],
        rate="samples/s",
        mb=True,
    )
    ratio = loader["ratio_all_spaces"]
    print(f"  ffx / baseline, 4 spaces: {ratio:.2f}x ({verdict(ratio, TARGET_LOADER_RATIO)})")
    print(f"  ffx / baseline, RGB only: {loader['ratio_rgb']:.2f}x")
    colour = results["colour_on_device"]
    if colour["missing"]:
        print(f"  colour on the device: not timed ({colour['missing']})")
    else:
        ms = colour["worker_ms_device"]
        print(
            f"  CPU per sample in one loader worker (1 torch thread, {results['arguments']['crop']}^2): "
            f"colour on the device {ms:.2f} ms ({'meets' if ms <= TARGET_WORKER_MS else 'misses'} the "
            f"<= {TARGET_WORKER_MS:g} ms target), on the host {colour['worker_ms_host']:.2f} ms"
        )
        per_cpu, ratio = colour["samples_per_cpu_second"], colour["ratio_per_cpu_second"]
        print(
            f"  4-space samples per CPU-second (loader + conversion, both on the CPU): ffx colour on the "
            f"device {per_cpu['ffx']:.1f} ({colour['batches_per_cpu_second']['ffx']:.2f} batches), baseline "
            f"{per_cpu['baseline']:.1f}: {ratio:.2f}x ({verdict(ratio, TARGET_PER_CPU_RATIO)})"
        )
    print_machine_load(
        [writing["stage"], writing["packing"], *writing["tar"], *loader["timings"]], results["waits"]
    )


def _shard_bytes(build: Path) -> int:
    from ffx.pipeline.engine.builddir import BuildDir

    return tree_bytes(BuildDir(build).shards, "*.tar")[1]


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict:
    from ffx.pipeline.engine.builddir import BuildDir

    clips = [] if args.no_media else media_videos()
    print(f"Set-up (untimed): index + {args.videos * args.crops_per_video} crops in {work} ...", flush=True)
    base, videos = index_tree(work, args.videos)
    origin = write_crops(base, videos, args.crops_per_video, clips)
    items = train_items(base)
    if not items:
        sys.exit("no train samples: use more --videos")
    shard_size = args.shard_size or math.ceil(len(items) / TRAIN_SHARDS)
    settings = {"spaces": SPACES, "max_count": shard_size}  # run_shard writes them into the recipe
    faces = pq.read_table(BuildDir(base).table("faces")).to_pylist()
    warm_page_cache([base / row["path"] for row in faces])

    quiet = Quiet(args.max_wait)
    reports = []

    def stage_round(number: int) -> Timing:
        timing, report = time_stage(base, work / f"build-{number}", settings, args.shard_workers)
        reports.append(report)
        if number:  # keep round 1's outputs only
            shutil.rmtree(work / f"build-{number}")
        return timing

    (stage,), stage_runs = interleaved(args.repeats, [("run_shard", stage_round)], quiet)
    build = BuildDir(work / "build-0")
    shards = build.shards
    index = json.loads(build.shard_index.read_text(encoding="utf-8"))

    members_dir = work / "members"
    members = extract_members(shards, members_dir)
    samples = sum(entry["samples"] for entry in index["shards"])
    warm_page_cache(sorted(build.samples.glob("*.tar")))
    warm_page_cache(sorted(members_dir.iterdir()))
    tars = [
        ("tar samples/*.tar + fsync", build.samples, work / "samples.tar", True),
        ("tar samples/*.tar", build.samples, work / "samples.tar", False),
        (f"tar {members} member files + fsync", members_dir, work / "members.tar", True),
    ]
    writing_parts: list[tuple[str, Callable[[int], Timing]]] = [
        ("write_shards", lambda _number: time_packing(build.root))
    ]
    for name, source, out, fsync in tars:
        part = partial(_tar_round, name=name, source=source, out=out, samples=samples, fsync=fsync)
        writing_parts.append((name, part))
    (packing, *tar_timings), writing_runs = interleaved(args.repeats, writing_parts, quiet)
    (work / "samples.tar").unlink()
    (work / "members.tar").unlink()
    shutil.rmtree(members_dir)

    train = index["splits"]["train"]
    if train["shards"] < max(args.loader_workers, 1):
        print(f"WARNING: {train['shards']} train shards for {args.loader_workers} loader workers")
    crop_bytes = tree_bytes(BuildDir(base).faces, "*.png")[1]
    train_png_bytes = sum(Path(path).stat().st_size for path, _label in items)
    warm_page_cache([shards / entry["name"] for entry in index["shards"] if entry["split"] == "train"])
    warm_page_cache([Path(path) for path, _label in items])
    warm_imports()
    parts: list[tuple[str, Callable[[int], Timing]]] = [
        ("ffx", lambda _number: time_ffx_loader(shards, SPACES, args, train["bytes"])),
        ("baseline", lambda _number: time_baseline_loader(items, True, args, train_png_bytes)),
        ("ffx rgb", lambda _number: time_ffx_loader(shards, ("rgb",), args, train["bytes"])),
        ("baseline rgb", lambda _number: time_baseline_loader(items, False, args, train_png_bytes)),
    ]
    colour_missing = colour_on_device_missing()
    if colour_missing is None:
        parts += [
            (
                "ffx colour on device",
                lambda _number: time_ffx_loader(shards, SPACES, args, train["bytes"], "device"),
            ),
            ("worker: colour on device", lambda _number: time_worker_samples(shards, args, "device")),
            ("worker: colour on host", lambda _number: time_worker_samples(shards, args, "host")),
        ]
    else:
        print(f"Colour on the device: not timed ({colour_missing}).")
    best, loader_runs = interleaved(args.repeats, [(f"loader: {name}", part) for name, part in parts], quiet)
    loader_timings = {name: timing for (name, _part), timing in zip(parts, best)}
    for name, timing in loader_timings.items():
        if timing.items != len(items):
            print(f"WARNING: {name} gave {timing.items} samples, the train split has {len(items)}")

    def mb_ratio(first: Timing, second: Timing) -> float | None:
        return first.mb_per_second / second.mb_per_second if second.mb_per_second else None

    def samples_ratio(first: Timing, second: Timing) -> float | None:
        return first.rate / second.rate if second.rate else None

    colour: dict = {"missing": colour_missing}
    if colour_missing is None:
        device, baseline = loader_timings["ffx colour on device"], loader_timings["baseline"]
        per_cpu = {
            name: t.items / t.total_cpu_seconds for name, t in (("ffx", device), ("baseline", baseline))
        }
        colour |= {
            "worker_ms_device": 1000
            * loader_timings["worker: colour on device"].total_cpu_seconds
            / max(loader_timings["worker: colour on device"].items, 1),
            "worker_ms_host": 1000
            * loader_timings["worker: colour on host"].total_cpu_seconds
            / max(loader_timings["worker: colour on host"].items, 1),
            "samples_per_cpu_second": per_cpu,
            "batches_per_cpu_second": {name: value / args.batch_size for name, value in per_cpu.items()},
            "ratio_per_cpu_second": per_cpu["ffx"] / per_cpu["baseline"],
        }

    return {
        "environment": versions(),
        "arguments": arguments_record(args),
        "inputs": {
            "videos": len(videos),
            "crops_per_video": args.crops_per_video,
            "samples": len(videos) * args.crops_per_video,
            "origin": origin,
            "crop_bytes": crop_bytes,
            "by_split": {split: sum(row["split"] == split for row in videos) for split in index["splits"]},
        },
        "settings": index["settings"],  # the recipe's: spaces, png_level, max_count, max_bytes, seed
        "index": {
            "shards": len(index["shards"]),
            "samples": samples,
            "bytes": sum(entry["bytes"] for entry in index["shards"]),
            "splits": index["splits"],
        },
        "writing": {
            "stage": stage.as_dict(),
            "stage_report": reports[stage_runs.index(stage)],
            "packing": packing.as_dict(),
            "tar": [timing.as_dict() for timing in tar_timings],
            "members": members,
            "ratios": {
                "packing_over_tar": mb_ratio(packing, tar_timings[0]),
                "packing_over_tar_no_fsync": mb_ratio(packing, tar_timings[1]),
                "packing_over_tar_members": mb_ratio(packing, tar_timings[2]),
            },
            "all_rounds": [timing.as_dict() for timing in (*stage_runs, *writing_runs)],
        },
        "loader": {
            "train_samples": len(items),
            "train_shards": train["shards"],
            "timings": [timing.as_dict() for timing in loader_timings.values()],
            "ratio_all_spaces": samples_ratio(loader_timings["ffx"], loader_timings["baseline"]),
            "ratio_rgb": samples_ratio(loader_timings["ffx rgb"], loader_timings["baseline rgb"]),
            "all_rounds": [timing.as_dict() for timing in loader_runs],
        },
        "colour_on_device": colour,
        "waits": quiet.waits,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_and_report("shard", args, run, print_report)


if __name__ == "__main__":
    main()
