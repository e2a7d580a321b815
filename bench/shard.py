"""Benchmark of the `ffx shard` stage and the `ffx.data` loader, each against a baseline.

Inputs (untimed): tests/generated.py's build with 512x512 face crops, made without extract or crop
(--videos half real, half fake, --crops-per-video each), its crops frames of the real clips in
../shared/media/videos (a centred square; smooth random textures with --no-media).

Timed in alternating rounds:
- stage: `ffx shard BUILD --spaces rgb,lab,hsv,ycbcr --shard-size N` on a fresh copy of the build,
  in its own process as a user runs it (default workers: all cores); samples/s and MB/s of output;
- packing: `write_shards(build)` alone after deleting BUILD/shards, the samples being encoded
  already, against GNU tar of BUILD/samples (the very bytes the packer reads) into one archive
  with an fsync (the fair floor), without the fsync, and of the shards' members as loose files;
- loader, train split: `shard_loader(shard_dataset(BUILD/shards, "train", spaces, crop=448,
  train=True), batch_size, workers=2)` against the public ImageFolder-style way over the loose
  crop PNGs (cv2.imread -> RGB -> Lab, HSV, YCrCb -> random 448 crop -> ToTensor, in a torch
  DataLoader with the same batch size and workers), with the four spaces and with RGB only; and the
  colour made on the device (`colour_on="device"`, rgb_to_spaces here on the CPU): CPU per sample
  in one loader worker, and 4-space samples per CPU-second against the baseline.

    .venv/bin/python bench/shard.py            # defaults: 40 videos x 10 crops
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import common
import cv2
import numpy as np
import torch
from common import CROP_SIDE, FFX, TRAIN_SHARDS
from common.harness import Bench, Part, Stopwatch, merged, print_comparison, process

SPACES = ("rgb", "lab", "hsv", "ycbcr")
TARGET_LOADER_RATIO, TARGET_WORKER_MS, TARGET_PER_CPU_RATIO = 1.5, 6.0, 2.5
BENCH = Bench("shard", __doc__, rounds=1, max_wait=600.0)
BENCH.option("--videos", 40, "videos, half real and half fake", minimum=2)
BENCH.option("--crops-per-video", 10, "face crops per video", minimum=1)
BENCH.option("--shard-size", None, f"samples per shard (None: the train samples / {TRAIN_SHARDS})", minimum=1)
BENCH.option("--shard-workers", None, "`ffx shard --workers` (None: all cores, as the CLI)", minimum=1)
BENCH.option("--batch-size", 32, "loader batch size", minimum=1)
BENCH.option("--loader-workers", 2, "loader worker processes", minimum=0)
BENCH.option("--crop", 448, f"random crop side in the loaders (at most {CROP_SIDE})", minimum=1)
BENCH.option("--no-media", False, "random textures instead of the real clips' frames")


def train_items(build: Path) -> list[tuple[str, int]]:
    """(crop PNG path, label) of every train crop: faces.parquet joined with videos.parquet."""
    import pyarrow.parquet as pq

    videos = {row["key"]: row for row in pq.read_table(build / "videos.parquet").to_pylist()}
    faces = pq.read_table(build / "faces.parquet").to_pylist()
    ok = (row for row in faces if row["status"] == "ok" and row["path"])
    return [
        (str(build / row["path"]), videos[row["key"]]["label"])
        for row in ok
        if videos[row["key"]]["split"] == "train"
    ]


def time_tar(name: str, source: Path, out: Path, fsync: bool, samples: int):
    """GNU tar of a folder into one archive (and an fsync of it, as ffx fsyncs each shard)."""
    out.unlink(missing_ok=True)
    stopwatch = Stopwatch()
    subprocess.run(["tar", "-cf", str(out), "-C", str(source), "."], check=True)
    if fsync:
        with open(out, "rb") as handle:
            os.fsync(handle.fileno())
    return stopwatch.timing(name, samples, "samples", out.stat().st_size)


def time_packing(build: Path):
    """`write_shards` alone (settings from the build's recipe), BUILD/shards deleted first (untimed)."""
    from ffx.pipeline.stages.shard import write_shards

    shutil.rmtree(build / "shards")
    stopwatch = Stopwatch()
    index, _written = write_shards(build, show_progress=False)
    totals = index["splits"].values()
    samples, size = sum(t["samples"] for t in totals), sum(t["bytes"] for t in totals)
    return stopwatch.timing("ffx write_shards (pack only)", samples, "samples", size)


def _reap_workers() -> None:
    """Join finished worker processes (so their CPU time counts) once their loader is gone."""
    gc.collect()
    for child in multiprocessing.active_children():
        child.join(timeout=10)


def time_ffx_loader(shards: Path, spaces: tuple[str, ...], args, size: int, colour_on: str = "host"):
    """ffx.data's train loader iterated to the end. With `colour_on` "device", the workers decode RGB
    alone and this process makes `spaces` from each batch with rgb_to_spaces (on the CPU here: its
    CPU time is counted, as a GPU would make them in the train step)."""
    from ffx.data import shard_dataset, shard_loader
    from ffx.model.colour import rgb_to_spaces

    stopwatch, samples = Stopwatch(), 0
    dataset = shard_dataset(shards, "train", spaces=spaces, crop=args.crop, train=True, colour_on=colour_on)
    loader = shard_loader(dataset, batch_size=args.batch_size, workers=args.loader_workers)
    for batch in loader:
        images = rgb_to_spaces(batch["image"], spaces) if colour_on == "device" else batch["image"]
        samples += images.shape[0]
    stopwatch.stop()
    del loader, dataset, batch
    _reap_workers()
    where = ", colour on the device" if colour_on == "device" else ""
    return stopwatch.timing(f"ffx shard_loader ({','.join(spaces)}{where})", samples, "samples", size)


def time_worker(shards: Path, args, colour_on: str):
    """What one loader worker does, in this process with one torch thread (as in a worker): the train
    split decoded and cropped, RGB alone with `colour_on` "device", the four spaces with "host"."""
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


def time_baseline_loader(items: list[tuple[str, int]], all_spaces: bool, args, size: int):
    """The public way: a map-style Dataset in a torch DataLoader, iterated to the end."""
    stopwatch, samples, images = Stopwatch(), 0, None
    dataset = CropFolder(items, args.crop, all_spaces)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.loader_workers
    )
    for images, _labels in loader:
        samples += images.shape[0]
    stopwatch.stop()
    del loader, dataset, images
    _reap_workers()
    spaces = "rgb,lab,hsv,ycrcb" if all_spaces else "rgb"
    return stopwatch.timing(f"baseline DataLoader ({spaces})", samples, "samples", size)


def print_report(results: dict) -> None:
    inputs, index = results["inputs"], results["index"]
    splits = {split: totals["samples"] for split, totals in index["splits"].items()}
    print(
        f"Inputs: {inputs['samples']} train samples of {CROP_SIDE}x{CROP_SIDE} ({inputs['origin']}), crop "
        f"PNGs {inputs['crop_bytes'] / 1e6:.1f} MB; {index['shards']} shards, {index['bytes'] / 1e6:.1f} MB, "
        f"samples per split {splits}"
    )
    print_comparison(results)
    ratios = {(row["ffx"], row["baseline"]): row["ratio"] for row in results["ratios"]}
    loader = ratios[("ffx shard_loader (rgb,lab,hsv,ycbcr)", "baseline DataLoader (rgb,lab,hsv,ycrcb)")] or 0
    print(f"  loader, 4 spaces: {loader:.2f}x (target >= {TARGET_LOADER_RATIO:g}x)")
    colour = results["colour_on_device"]
    print(
        f"  CPU per sample in one loader worker (1 torch thread): colour on the device "
        f"{colour['worker_ms_device']:.2f} ms (target <= {TARGET_WORKER_MS:g} ms), on the host "
        f"{colour['worker_ms_host']:.2f} ms\n  4-space samples per CPU-second (loader + conversion, both on "
        f"the CPU): ffx colour on the device {colour['per_cpu']['ffx']:.1f}, baseline "
        f"{colour['per_cpu']['baseline']:.1f}: {colour['ratio_per_cpu']:.2f}x "
        f"(target >= {TARGET_PER_CPU_RATIO:g}x)"
    )


def packing(build: Path, work: Path, rounds: int) -> dict:
    """`write_shards` against GNU tar of BUILD/samples (with and without the fsync) and of the
    shards' members as loose files, in alternating rounds."""
    members, index = work / "members", json.loads((build / "shards" / "index.json").read_text())
    samples = sum(entry["samples"] for entry in index["shards"])
    members.mkdir()
    for shard in sorted((build / "shards").glob("*.tar")):  # every member as a loose file
        with tarfile.open(shard) as archive:
            archive.extractall(members, filter="data")
    common.warm_page_cache([*sorted((build / "samples").glob("*.tar")), *sorted(members.iterdir())])
    tars = [(f"tar samples/*.tar{' + fsync' * fsync}", build / "samples", fsync) for fsync in (True, False)]
    tars.append(("tar member files + fsync", members, True))
    parts = [Part(n, lambda _, n=n, s=s, f=f: time_tar(n, s, work / "o.tar", f, samples)) for n, s, f in tars]
    parts.insert(0, Part("write_shards", lambda _n: time_packing(build), tuple(p.name for p in parts), "mb"))
    return BENCH.compare(parts, rounds)


def loaders(shards: Path, items: list[tuple[str, int]], args) -> dict:
    """ffx's loader against the ImageFolder-style baseline (4 spaces, RGB), the colour on the device,
    and one loader worker's CPU per sample, in alternating rounds."""
    from ffx.model.colour import rgb_to_spaces

    index = json.loads((shards / "index.json").read_text())
    size, png_bytes = index["splits"]["train"]["bytes"], sum(Path(path).stat().st_size for path, _ in items)
    common.warm_page_cache([shards / entry["name"] for entry in index["shards"] if entry["split"] == "train"])
    rgb_to_spaces(torch.zeros((1, 3, 2, 2), dtype=torch.uint8), SPACES)  # its tables, made once a run
    ffx, base4, base1 = "ffx shard_loader ({})", "baseline DataLoader (rgb,lab,hsv,ycrcb)", "baseline (rgb)"
    parts = [
        Part(ffx.format(",".join(SPACES)), lambda _n: time_ffx_loader(shards, SPACES, args, size), base4),
        Part(base4, lambda _n: time_baseline_loader(items, True, args, png_bytes)),
        Part(ffx.format("rgb"), lambda _n: time_ffx_loader(shards, ("rgb",), args, size), base1),
        Part(base1, lambda _n: time_baseline_loader(items, False, args, png_bytes)),
        Part("colour on the device", lambda _n: time_ffx_loader(shards, SPACES, args, size, "device")),
        Part("worker device", lambda _n: time_worker(shards, args, "device")),
        Part("worker host", lambda _n: time_worker(shards, args, "host")),
    ]
    results = BENCH.compare(parts, args.rounds)
    medians = results["medians"]
    ms = {name: 1e3 * t.total_cpu_seconds / (t.items or 1) for name, t in medians.items() if "worker" in name}
    device, baseline = medians["colour on the device"], medians[base4]
    per_cpu = {name: t.items / t.total_cpu_seconds for name, t in (("ffx", device), ("baseline", baseline))}
    colour = {"worker_ms_device": ms["worker device"], "worker_ms_host": ms["worker host"]}
    colour |= {"per_cpu": per_cpu, "ratio_per_cpu": per_cpu["ffx"] / per_cpu["baseline"]}
    return results | {"colour_on_device": colour}


def run(args, work: Path) -> dict:
    import torchvision.transforms  # noqa: F401 (imported before timing: torchvision alone takes seconds)

    if args.crop > CROP_SIDE:
        raise SystemExit(f"--crop must be at most {CROP_SIDE}, the crops' side")
    print(f"Set-up (untimed): {args.videos * args.crops_per_video} crops in {work} ...", flush=True)
    clips = [] if args.no_media else common.media_videos()
    base, origin = common.cropped_build(work / "base", args.videos // 2, args.crops_per_video, clips)
    items = train_items(base)
    shard_size = args.shard_size or math.ceil(len(items) / TRAIN_SHARDS)
    flags = ["--spaces", ",".join(SPACES), "--shard-size", str(shard_size)]
    flags += ["--workers", str(args.shard_workers)] if args.shard_workers else []
    common.warm_page_cache(sorted((base / "faces").rglob("*.png")))

    def stage(number: int):
        build = work / f"build-{number}"
        shutil.copytree(base, build)
        timing = process("ffx shard (encode + pack)", [FFX, "shard", str(build), *flags], build=build)
        index = json.loads((build / "shards" / "index.json").read_text())
        timing.items, timing.unit = sum(entry["samples"] for entry in index["shards"]), "samples"
        timing.bytes = common.tree_bytes(build / "shards", "*.tar")[1]
        if number:  # keep round 1's outputs only
            shutil.rmtree(build)
        return timing

    parts = [BENCH.compare([Part("ffx shard", stage)], args.rounds)]
    build = work / "build-0"
    parts += [packing(build, work, args.rounds), loaders(build / "shards", items, args)]
    index = json.loads((build / "shards" / "index.json").read_text())
    crop_bytes = common.tree_bytes(base / "faces", "*.png")[1]
    return merged(*parts) | {
        "environment": common.environment(torch=torch.__version__, cv2=cv2.__version__, numpy=np.__version__),
        "inputs": {"samples": len(items), "origin": origin, "crop_bytes": crop_bytes},
        "index": index | {"shards": len(index["shards"]), "bytes": sum(e["bytes"] for e in index["shards"])},
        "colour_on_device": parts[2]["colour_on_device"],
    }


if __name__ == "__main__":
    BENCH.main(run, print_report)
