"""`ffx shard`: every face crop in the chosen colour spaces, packed into deterministic WebDataset tars.

Two steps. First, per video (worker processes, resumable, split into parts like the other
stages), each crop is converted and PNG-encoded once per colour space and its tar records go to
`BUILD/samples/{key}.tar`; samples.parquet records where each sample lies and its exact size.
Then, once every part is done, one process lays the samples out: per split in a seeded hash
order that mixes videos, cut into shards by count and by bytes, each shard the concatenation of
its samples' records (copied, not encoded again), written under a temporary name, hashed and
renamed. The layout depends only on the samples and the settings, so one run and any number of
parts give byte-identical shards.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tarfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ffx.errors import BuildError, FfxError
from ffx.pipeline import store
from ffx.pipeline.color import convert, parse_spaces
from ffx.pipeline.distribute import Part
from ffx.pipeline.images import encode_png
from ffx.pipeline.index import MANIFEST_FILE, VIDEOS_TABLE
from ffx.pipeline.manifest import load_manifest
from ffx.pipeline.progress import stage_progress
from ffx.pipeline.record import write_build_record
from ffx.pipeline.schema import SAMPLES_SCHEMA
from ffx.pipeline.statuses import NO_FRAME, NO_TRACK, Status
from ffx.pipeline.tars import END_OF_ARCHIVE, tar_records
from ffx.pipeline.workers import Stalled, available_cores, run_tasks

STAGE = "samples"
SAMPLES_DIR = "samples"
SHARDS_DIR = "shards"
SHARD_INDEX = "index.json"
PLAN_FILE = ".plan.json"
FACES_TABLE = "faces.parquet"
INDEX_FORMAT = 1


@dataclass(frozen=True)
class ShardSettings:
    """What goes into each sample (`spaces`, `png_level`) and how samples are laid out in shards."""

    spaces: tuple[str, ...] = ("rgb", "lab", "hsv", "ycbcr")
    png_level: int = 1
    max_count: int = 10_000
    max_bytes: int = 1_000_000_000
    seed: int = 0


@dataclass(frozen=True)
class FaceCrop:
    """One crop of faces.parquet that becomes one sample."""

    frame_index: int
    track: int
    path: str  # crop PNG relative to the build
    box: tuple[float, float, float, float]
    crop_box: tuple[int, int, int, int]
    prob: float


@dataclass(frozen=True)
class SampleTask:
    """One video for a worker: its crops and the facts every sample's JSON carries."""

    key: str
    build: str
    crops: tuple[FaceCrop, ...]
    video: dict  # dataset, source, label, label_name, method, split, group
    spaces: tuple[str, ...]
    png_level: int


def sample_name(key: str, frame_index: int, track: int) -> str:
    """The WebDataset key of a crop: `{key}_{frame:04d}`, `_{track:02d}` added for extra faces."""
    name = f"{key}_{frame_index:04d}"
    return name if track == 0 else f"{name}_{track:02d}"


def encode_samples(task: SampleTask, report) -> list[dict]:
    """Worker entry point: write the video's samples file and return one row per crop."""
    build = Path(task.build)
    video = task.video
    for temp in (build / SAMPLES_DIR).glob(f".{task.key}.tar.*.tmp"):  # left by a killed worker
        temp.unlink()
    blocks: list[bytes] = []
    rows = []
    offset = 0
    for crop in task.crops:
        name = sample_name(task.key, crop.frame_index, crop.track)
        row = _row(task.key, name, crop.frame_index, crop.track, video)
        try:
            rgb_png = (build / crop.path).read_bytes()
        except OSError as error:
            rows.append(row | {"sample": "", "status": Status.MISSING.value, "error": f"crop: {error}"})
            continue
        bgr = cv2.imdecode(np.frombuffer(rgb_png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            rows.append(row | {"sample": "", "status": Status.ERROR.value, "error": "crop PNG unreadable"})
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        metadata = video | {
            "video": task.key,
            "frame_index": crop.frame_index,
            "track": crop.track,
            "box": list(crop.box),
            "crop_box": list(crop.crop_box),
            "prob": crop.prob,
        }
        members = [
            (f"{name}.cls", str(video["label"]).encode()),
            (f"{name}.json", json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()),
        ]
        for space in task.spaces:
            # The crop file already is the RGB PNG: copied, not encoded again.
            data = rgb_png if space == "rgb" else encode_png(convert(rgb, space), task.png_level)
            members.append((f"{name}.{space}.png", data))
        block = tar_records(members)
        blocks.append(block)
        rows.append(row | {"offset": offset, "length": len(block)})
        offset += len(block)
        report(crop.frame_index)
    if blocks:
        store.write_bytes(build / SAMPLES_DIR / f"{task.key}.tar", b"".join(blocks) + END_OF_ARCHIVE)
    return rows


def _row(key: str, sample: str, frame_index: int, track: int, video: dict) -> dict:
    return {
        "key": key,
        "sample": sample,
        "frame_index": frame_index,
        "track": track,
        "split": video["split"],
        "label": video["label"],
        "offset": 0,
        "length": 0,
        "status": Status.OK.value,
        "error": "",
    }


@dataclass
class ShardReport:
    """What one `ffx shard` run did."""

    videos: int  # in this part
    skipped: int  # already done before this run
    samples: dict[str, int]  # rows of this run per status
    seconds: float
    merged: bool  # every part done, so the shards were laid out
    shards: list[dict] = field(default_factory=list)  # the index's shard entries
    splits: dict[str, dict] = field(default_factory=dict)  # the index's totals per split
    shards_written: int = 0  # the rest were already complete from an earlier run
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, status, error)

    @property
    def videos_done(self) -> int:
        return self.videos - self.skipped


def shard_settings_for(
    build: Path,
    *,
    spaces: str | None = None,
    max_count: int | None = None,
    max_bytes: int | None = None,
    seed: int | None = None,
    png_level: int = 1,
) -> ShardSettings:
    """Settings from the build's recipe (`spaces`, `[shard]`, `seed`), the given options first."""
    recipe = load_manifest(Path(build) / MANIFEST_FILE)
    return ShardSettings(
        spaces=parse_spaces(spaces) if spaces else tuple(recipe.spaces),
        png_level=png_level,
        max_count=max_count or recipe.shard.max_count,
        max_bytes=max_bytes or recipe.shard.max_bytes,
        seed=recipe.seed if seed is None else seed,
    )


def run_shard(
    build: Path,
    *,
    settings: ShardSettings | None = None,
    part: Part | None = None,
    workers: int | None = None,
    stall_seconds: float = 300.0,
    show_progress: bool = True,
    flush_seconds: float = 2.0,
    strict: bool = False,
) -> ShardReport:
    """Encode this part's unfinished videos; once all parts are done, lay out and write the shards
    and BUILD/build.json (`strict`: fingerprint the input videos by sha256, not size and mtime)."""
    build, part = Path(build), part or Part()
    settings = settings or shard_settings_for(build)
    parse_spaces(settings.spaces)
    if settings.max_count < 1 or settings.max_bytes < 1:
        raise FfxError("--shard-size and --shard-bytes must be positive")
    if not 0 <= settings.png_level <= 9:
        raise FfxError(f"--png-level must be 0..9, got {settings.png_level}")
    videos = store.read_table(build / VIDEOS_TABLE, "`ffx index`").to_pylist()
    faces = store.read_table(build / FACES_TABLE, "`ffx crop` (all parts)")
    store.record_settings(build, STAGE, {"spaces": list(settings.spaces), "png_level": settings.png_level})

    video_of = {video["key"]: video for video in videos}
    crops_of, reasons = _crops_per_video(faces)
    keys = part.select(list(video_of))
    ledger = store.Ledger(build, STAGE, SAMPLES_SCHEMA, sort_by=["key", "frame_index", "track"])
    done = ledger.done_keys()
    todo = [key for key in keys if key not in done]
    counts: Counter[str] = Counter()
    report = ShardReport(len(keys), len(keys) - len(todo), {}, 0.0, False)
    with (
        stage_progress("shard", len(todo), "videos", "samples", show_progress) as progress,
        ledger.writer(part, flush_seconds=flush_seconds) as writer,
    ):

        def record(key: str, rows: list[dict]) -> None:
            writer.add_item(rows)
            counts.update(row["status"] for row in rows)
            failed = [row for row in rows if row["status"] != Status.OK.value]
            if failed and not any(row["sample"] for row in rows):
                report.failed.append((key, failed[0]["status"], failed[0]["error"]))
            progress.advance(1, sum(1 for row in rows if row["sample"]))

        for key in todo:
            if key not in crops_of:
                status, error = reasons.get(key, (Status.MISSING.value, "no rows in faces.parquet"))
                record(
                    key,
                    [_row(key, "", NO_FRAME, NO_TRACK, video_of[key]) | {"status": status, "error": error}],
                )
        tasks = [
            SampleTask(
                key,
                str(build),
                crops_of[key],
                _video_facts(video_of[key]),
                settings.spaces,
                settings.png_level,
            )
            for key in todo
            if key in crops_of
        ]
        cores = available_cores()
        for task, result in run_tasks(encode_samples, tasks, workers or cores, stall_seconds):
            if isinstance(result, Stalled):
                status = Status.TIMEOUT if result.hung else Status.ERROR
                error = f"shard worker: {result.reason}"
                result = [
                    _row(task.key, "", NO_FRAME, NO_TRACK, task.video)
                    | {"status": status.value, "error": error}
                ]
            record(task.key, result)
    report.samples = dict(counts)
    store.log_run(build, STAGE, part, progress.elapsed, len(todo))
    report.merged = ledger.merge_when_complete(video_of)
    if report.merged:
        # Two parts can both find the samples complete; one lays the shards out, the other waits
        # and then finds them written.
        with open(build / f".{SHARDS_DIR}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            started = time.monotonic()
            index, report.shards_written = write_shards(build, settings, show_progress)
            report.shards, report.splits = index["shards"], index["splits"]
            store.log_run(build, SHARDS_DIR, part, time.monotonic() - started, report.shards_written)
            write_build_record(build, report.shards, strict=strict)
    report.seconds = progress.elapsed
    return report


def _video_facts(video: dict) -> dict:
    """The video-level fields of every sample's JSON."""
    return {
        "dataset": video["dataset"],
        "source": video["path"],
        "label": video["label"],
        "label_name": video["label_name"],
        "method": video["method"],
        "split": video["split"],
        "group": video["group"],
    }


def _crops_per_video(faces) -> tuple[dict[str, tuple[FaceCrop, ...]], dict[str, tuple[str, str]]]:
    """Crops on disk per video, and for videos without any, the most common reason why."""
    crops: dict[str, list[FaceCrop]] = {}
    reasons: dict[str, Counter[tuple[str, str]]] = {}
    for row in faces.to_pylist():
        if row["status"] == Status.OK.value and row["path"]:
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            crop_box = (row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"])
            face = FaceCrop(row["frame_index"], row["track"], row["path"], box, crop_box, row["prob"])
            crops.setdefault(row["key"], []).append(face)
        else:
            reasons.setdefault(row["key"], Counter())[(row["status"], row["error"])] += 1
    ordered = {
        key: tuple(sorted(faces, key=lambda face: (face.frame_index, face.track)))
        for key, faces in crops.items()
    }
    no_crop = {key: counter.most_common(1)[0][0] for key, counter in reasons.items() if key not in ordered}
    return ordered, no_crop


def plan_shards(rows: list[dict], settings: ShardSettings) -> list[dict]:
    """Shards per split: samples in seeded hash order (mixing videos), cut by count and bytes.

    The order depends only on the seed and the sample names, never on how rows were produced."""
    by_split: dict[str, list[dict]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    shards = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda row: _shuffle_key(settings.seed, row["sample"]))
        current: list[dict] = []
        size = len(END_OF_ARCHIVE)
        for row in ordered:
            full = len(current) >= settings.max_count or size + row["length"] > settings.max_bytes
            if current and full:
                shards.append({"split": split, "rows": current})
                current, size = [], len(END_OF_ARCHIVE)
            current.append(row)
            size += row["length"]
        if current:
            shards.append({"split": split, "rows": current})
    per_split: Counter[str] = Counter()
    for shard in shards:  # numbered within their split: train-000000, train-000001, val-000000 ...
        shard["name"] = f"{shard['split']}-{per_split[shard['split']]:06d}.tar"
        per_split[shard["split"]] += 1
    return shards


def _shuffle_key(seed: int, sample: str) -> bytes:
    return hashlib.sha256(f"{seed}/{sample}".encode()).digest()


def write_shards(build: Path, settings: ShardSettings, show_progress: bool = True) -> tuple[dict, int]:
    """Write every planned shard not already complete, then shards/index.json; the index and how
    many shards were written now."""
    table = store.read_table(build / f"{STAGE}.parquet", "`ffx shard`")
    rows = [row for row in table.to_pylist() if row["sample"] and row["status"] == Status.OK.value]
    shards = plan_shards(rows, settings)
    shards_dir = build / SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    plan = {
        "spaces": list(settings.spaces),
        "png_level": settings.png_level,
        "shards": [
            [shard["name"], [(row["sample"], row["length"]) for row in shard["rows"]]] for shard in shards
        ],
    }
    digest = hashlib.sha256(json.dumps(plan, separators=(",", ":")).encode()).hexdigest()
    _drop_stale_shards(shards_dir, digest, {shard["name"] for shard in shards})
    store.write_json(shards_dir / PLAN_FILE, {"digest": digest})

    entries, written = [], 0
    total = sum(len(shard["rows"]) for shard in shards)
    with stage_progress("pack", total, "samples", "shards", show_progress) as progress:
        for shard in shards:
            path = shards_dir / shard["name"]
            if path.is_file():  # complete: shards only ever appear by an atomic rename
                sha256, size = store.file_sha256(path), path.stat().st_size
            else:
                sha256, size = _write_shard(build, path, shard["rows"])
                written += 1
            labels = Counter(str(row["label"]) for row in shard["rows"])
            entries.append(
                {
                    "name": shard["name"],
                    "split": shard["split"],
                    "samples": len(shard["rows"]),
                    "bytes": size,
                    "sha256": sha256,
                    "labels": dict(sorted(labels.items())),
                }
            )
            progress.advance(len(shard["rows"]), 1)
    index = _index(entries, settings, digest)
    store.write_json(shards_dir / SHARD_INDEX, index)
    return index, written


def _drop_stale_shards(shards_dir: Path, digest: str, names: set[str]) -> None:
    """Remove shards of an earlier, different layout (other settings or other samples)."""
    plan_path = shards_dir / PLAN_FILE
    same = plan_path.is_file() and json.loads(plan_path.read_text(encoding="utf-8")).get("digest") == digest
    for path in shards_dir.glob("*.tar"):
        if not same or path.name not in names:
            path.unlink()
    for temp in shards_dir.glob(".*.tmp"):  # left by a run killed while writing a shard
        temp.unlink()
    if not same:
        (shards_dir / SHARD_INDEX).unlink(missing_ok=True)


def _write_shard(build: Path, path: Path, rows: list[dict]) -> tuple[str, int]:
    sha256 = hashlib.sha256()
    size = 0
    with store.atomic_path(path) as temp, open(temp, "wb") as out:
        for row in rows:
            source = build / SAMPLES_DIR / f"{row['key']}.tar"
            try:
                with open(source, "rb") as samples:
                    samples.seek(row["offset"])
                    block = samples.read(row["length"])
            except OSError as error:
                raise BuildError(
                    f"{source}: {error.strerror}; rerun `ffx shard` after removing {STAGE}.parquet"
                ) from None
            if len(block) != row["length"]:
                raise BuildError(
                    f"{source} is shorter than samples.parquet says; it was changed after `ffx shard`"
                )
            out.write(block)
            sha256.update(block)
            size += len(block)
        out.write(END_OF_ARCHIVE)
        sha256.update(END_OF_ARCHIVE)
        size += len(END_OF_ARCHIVE)
        out.flush()
    return sha256.hexdigest(), size


def _index(entries: list[dict], settings: ShardSettings, digest: str) -> dict:
    splits: dict[str, dict] = {}
    for entry in entries:
        split = splits.setdefault(
            entry["split"], {"shards": 0, "samples": 0, "bytes": 0, "labels": Counter()}
        )
        split["shards"] += 1
        split["samples"] += entry["samples"]
        split["bytes"] += entry["bytes"]
        split["labels"].update(entry["labels"])
    for split in splits.values():
        split["labels"] = dict(sorted(split["labels"].items()))
    return {
        "format": INDEX_FORMAT,
        "settings": asdict(settings) | {"spaces": list(settings.spaces)},
        "layout_digest": digest,
        "shards": entries,
        "splits": splits,
    }


@dataclass
class VerifyReport:
    """What `ffx verify` found: shards checked and one line per problem."""

    shards: int
    samples: int
    problems: list[str]


def verify_shards(build: Path) -> VerifyReport:
    """Recompute every shard's sha256, size, sample and label counts against shards/index.json."""
    shards_dir = Path(build) / SHARDS_DIR
    index_path = shards_dir / SHARD_INDEX
    if not index_path.is_file():
        raise BuildError(f"{index_path} not found: run `ffx shard` (all parts) first")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    problems, samples = [], 0
    for entry in index["shards"]:
        path = shards_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        sha256, size = store.file_sha256(path), path.stat().st_size
        if sha256 != entry["sha256"] or size != entry["bytes"]:
            problems.append(
                f"{entry['name']}: altered or truncated ({size} bytes, sha256 {sha256[:12]}…; "
                f"index: {entry['bytes']} bytes, {entry['sha256'][:12]}…)"
            )
            continue
        labels = _shard_labels(path)
        samples += sum(labels.values())
        if sum(labels.values()) != entry["samples"] or dict(sorted(labels.items())) != entry["labels"]:
            problems.append(
                f"{entry['name']}: {sum(labels.values())} samples inside, index says {entry['samples']}"
            )
    listed = {entry["name"] for entry in index["shards"]}
    problems += [
        f"{path.name}: not in index.json"
        for path in sorted(shards_dir.glob("*.tar"))
        if path.name not in listed
    ]
    return VerifyReport(len(index["shards"]), samples, problems)


def _shard_labels(path: Path) -> Counter[str]:
    """Samples per label, read from the `.cls` members of a shard."""
    labels: Counter[str] = Counter()
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            if member.name.endswith(".cls"):
                labels[archive.extractfile(member).read().decode()] += 1
    return labels
