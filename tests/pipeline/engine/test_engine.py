"""The stage engine as a user meets it: re-indexing, changed settings, damaged or missing files,
two runs at once. Each test is one of the ways a build used to end silently wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.cli import main
from ffx.errors import BuildError
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.lock import hold_lock
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.stages.status import build_status
from ffx.pipeline.stages.verify import verify_shards
from ffx.synthetic import portrait_frames, write_h264_index_video, write_h264_video
from tests.assertions import one_error_line
from tests.conftest import touch
from tests.generated import indexed_clips, make_cropped_build

FRAMES = 4


@pytest.fixture
def sharded_build(tmp_path: Path) -> Path:
    """A finished generated build: six real and six fake videos, four crops each, shards laid out."""
    build = make_cropped_build(tmp_path, videos_per_label=6, frames=FRAMES)
    assert run_shard(build, max_count=5, workers=2, show_progress=False).merged
    return build


def shard_bytes(build: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((build / "shards").glob("*.tar"))}


def sample_keys(build: Path) -> set[str]:
    keys = set()
    for path in (build / "shards").glob("*.tar"):
        with tarfile.open(path) as archive:
            keys |= {member.name.split(".")[0] for member in archive}
    return keys


# --- 1. a damaged shard is written again, never hashed into the index -----------------------------


def test_a_flipped_byte_or_a_truncated_shard_is_rewritten_not_laundered(sharded_build: Path, capsys) -> None:
    good = shard_bytes(sharded_build)
    first, second = sorted(good)[:2]
    flipped = bytearray(good[first])
    flipped[600] ^= 0x01
    (sharded_build / "shards" / first).write_bytes(bytes(flipped))
    (sharded_build / "shards" / second).write_bytes(good[second][:1000])
    assert main(["verify", str(sharded_build)]) == 1
    out = capsys.readouterr().out
    assert f"{first}: altered or truncated" in out and f"{second}: altered or truncated" in out
    report = run_shard(sharded_build, workers=1, show_progress=False)
    assert report.counts["shards written"] == 2
    assert shard_bytes(sharded_build) == good
    assert verify_shards(sharded_build).problems == []


def test_verify_reports_an_unreadable_tar_without_a_traceback(sharded_build: Path, capsys) -> None:
    name = sorted(shard_bytes(sharded_build))[0]
    (sharded_build / "shards" / name).write_bytes(b"\xff" * 4096)
    index_path = sharded_build / "shards" / "index.json"
    index = json.loads(index_path.read_text())
    for entry in index["shards"]:  # an index that agrees with the garbage: only reading can tell
        if entry["name"] == name:
            entry["bytes"] = 4096
            entry["sha256"] = __import__("hashlib").sha256(b"\xff" * 4096).hexdigest()
    index_path.write_text(json.dumps(index))
    assert main(["verify", str(sharded_build)]) == 1
    assert f"{name}: not a readable tar" in capsys.readouterr().out


# --- 2. re-indexing: later stages are out of date until rebuilt, gone videos leave everything -----


def test_reindex_after_a_video_was_deleted(sharded_build: Path, capsys) -> None:
    videos = {row["key"]: row for row in pq.read_table(sharded_build / "videos.parquet").to_pylist()}
    root = Path(json.loads((sharded_build / "index.json").read_text())["root"])
    gone = "real__clip0"
    (root / videos[gone]["path"]).unlink()
    run_index(load_manifest(sharded_build / "manifest.toml"), root, sharded_build)  # the build's recipe
    after = {row["key"]: row["split"] for row in pq.read_table(sharded_build / "videos.parquet").to_pylist()}
    assert after == {key: row["split"] for key, row in videos.items() if key != gone}  # nothing moved

    assert main(["shard", str(sharded_build)]) == 1
    assert "frames.parquet is out of date (1 no longer indexed" in one_error_line(capsys)
    assert main(["export", str(sharded_build), "--format", "mcx-api", "--out", str(sharded_build / "x")]) == 1
    assert "is out of date" in one_error_line(capsys)
    assert main(["verify", str(sharded_build)]) == 1
    assert "out of date" in capsys.readouterr().out
    frames = next(stage for stage in build_status(sharded_build) if stage.stage == "frames")
    assert frames.currency.gone == 1 and frames.currency.current == len(after)

    reports = [
        run(sharded_build, workers=1, show_progress=False) for run in (run_extract, run_crop, run_shard)
    ]
    assert [(report.dropped, report.done_now) for report in reports] == [(1, 0)] * 3
    assert verify_shards(sharded_build).problems == []
    assert not any(key.startswith(gone) for key in sample_keys(sharded_build))
    assert len(sample_keys(sharded_build)) == (len(after) - 1) * FRAMES  # fake__none has no crop
    assert not (sharded_build / "faces" / gone).exists()
    assert not (sharded_build / "samples" / f"{gone}.tar").exists()
    assert all(stage.currency is None or stage.currency.ok for stage in build_status(sharded_build))


def test_a_relabelled_video_is_repacked(sharded_build: Path) -> None:
    """A label change (as a re-index of a fixed datalist writes it) keeps every sample name and size:
    only provenance can tell that the shards hold the old label."""
    videos = pq.read_table(sharded_build / "videos.parquet")
    rows = videos.to_pylist()
    relabelled = next(row for row in rows if row["key"] == "real__clip1")
    relabelled["label"], relabelled["label_name"] = 1, "fake"
    pq.write_table(pa.Table.from_pylist(rows, schema=videos.schema), sharded_build / "videos.parquet")
    assert main(["shard", str(sharded_build)]) == 0
    assert verify_shards(sharded_build).problems == []
    labels = {}
    for path in (sharded_build / "shards").glob("*.tar"):
        with tarfile.open(path) as archive:
            for member in archive:
                if member.name.endswith(".cls"):
                    labels[member.name.split(".")[0]] = archive.extractfile(member).read().decode()
    assert {labels[f"real__clip1_{frame:04d}"] for frame in range(FRAMES)} == {"1"}


# --- 5 and 8. the build's recipe is the one truth of its settings --------------------------------


def test_a_stage_option_is_written_into_the_recipe_and_a_disagreeing_build_is_refused(
    tmp_path: Path, capsys
) -> None:
    root = tmp_path / "data"
    write_h264_index_video(root / "real" / "a.mp4", 8, 64, 48)
    build = tmp_path / "build"
    assert main(["index", "folder", "--root", str(root), "--build", str(build)]) == 0
    assert main(["extract", str(build), "--sample", "first:5", "--png-level", "2"]) == 0
    recipe = load_manifest(build / "manifest.toml")
    assert (recipe.sampling, recipe.extract.png_level) == ("first:5", 2)
    capsys.readouterr()
    arguments = ["build", "folder", "--root", str(root), "--build", str(build)]
    assert main(arguments) == 1
    error = one_error_line(capsys)
    assert "sampling = 'first:5' but this command asks 'first:30'" in error
    assert "--set 'sampling=\"first:5\"'" in error
    assert load_manifest(build / "manifest.toml").sampling == "first:5"  # untouched


def test_recipes_set_every_stage_option_and_ffpp_reuses_boxes(tmp_path: Path) -> None:
    for name in ("ffpp-c23", "ffpp-c40", "dfdc"):
        assert load_manifest(name).crop.boxes_from_original, name
    recipe = load_manifest("folder", assignments=["crop.detect_max_side=480", "crop.all_faces=true"])
    assert (recipe.crop.detect_max_side, recipe.crop.all_faces) == (480, True)
    # A build made before the FF++ recipe reused boxes is refused by the recipe that does, with the
    # --set that keeps it as it was.
    root = tmp_path / "ffpp"
    touch(root, "original_sequences/youtube/c23/videos/000.mp4")
    touch(root, "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4")
    touch(root, "original_sequences/youtube/c23/videos/001.mp4")
    build = tmp_path / "build"
    methods = 'layout.methods=["Deepfakes"]'
    run_index(load_manifest("ffpp-c23", assignments=[methods, "crop.boxes_from_original=false"]), root, build)
    (build / "frames.parts").mkdir()  # a later stage has started
    with pytest.raises(
        BuildError, match=r"crop\.boxes_from_original = False .*--set crop\.boxes_from_original=false"
    ):
        run_index(load_manifest("ffpp-c23", assignments=[methods]), root, build)


# --- 6. a missing input is a status row, never a crash --------------------------------------------


def test_a_deleted_frame_gives_the_video_a_missing_row(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    write_h264_video(root / "real" / "face.mp4", portrait_frames(4, phase=0.0, fake=False))
    write_h264_video(root / "real" / "other.mp4", portrait_frames(4, phase=1.0, fake=False))
    build = tmp_path / "build"
    run_index(load_manifest("folder", {"sampling": "first:4", "crop.size": 64}), root, build)
    run_extract(build, workers=1, show_progress=False)
    (build / "frames" / "real__face" / "000002.png").unlink()
    assert main(["crop", str(build), "--workers", "1", "--fail-on-error"]) == 1
    out = capsys.readouterr().out
    assert "missing real__face" in out and "000002.png not found" in out
    rows = [row for row in pq.read_table(build / "faces.parquet").to_pylist() if row["key"] == "real__face"]
    assert [(row["frame_index"], row["status"]) for row in rows] == [(-1, "missing")]
    other = [row for row in pq.read_table(build / "faces.parquet").to_pylist() if row["key"] == "real__other"]
    assert [row["status"] for row in other] == ["ok"] * 4
    # The repair: extract redoes the video whose frame is gone, then crop the video it lacked.
    assert run_extract(build, workers=1, show_progress=False).done_now == 1
    assert run_crop(build, workers=1, show_progress=False).done_now == 1
    rows = [row for row in pq.read_table(build / "faces.parquet").to_pylist() if row["key"] == "real__face"]
    assert [row["status"] for row in rows] == ["ok"] * 4


def test_a_deleted_crop_gives_the_video_a_missing_row(sharded_build: Path) -> None:
    faces = pq.read_table(sharded_build / "faces.parquet").to_pylist()
    victim = next(row for row in faces if row["path"])
    (sharded_build / victim["path"]).unlink()
    # A new shard seed changes only the layout, so the samples are current: delete them to re-read
    # the crops, as after a crash.
    (sharded_build / "samples.parquet").unlink()
    report = run_shard(sharded_build, workers=1, show_progress=False)
    assert (victim["key"], "missing") in [(key, status) for key, status, _ in report.failed]
    assert report.merged and verify_shards(sharded_build).problems == []


# --- 7. one run per stage and part at a time ------------------------------------------------------


def test_a_second_run_of_a_stage_exits_naming_the_holder(sharded_build: Path, capsys) -> None:
    recipe = (sharded_build / "manifest.toml").read_bytes()
    with hold_lock(BuildDir(sharded_build), "samples", Part()):
        assert main(["shard", str(sharded_build), "--seed", "7"]) == 1
        error = one_error_line(capsys)
        assert f"another ffx shard is running on {sharded_build}" in error and f"pid {os.getpid()}" in error
        assert (sharded_build / "manifest.toml").read_bytes() == recipe  # a refused run changes nothing
        # A run with another part count would work on the same videos: refused too.
        with pytest.raises(BuildError, match="another ffx shard is running"):
            run_shard(sharded_build, part=Part(0, 2), seed=7, workers=1, show_progress=False)
        # A run with nothing to do needs no lock: it reports the build as it is.
        assert main(["shard", str(sharded_build)]) == 0


def test_a_lock_left_by_a_dead_process_is_taken_over(sharded_build: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = BuildDir(sharded_build).lock("samples", Part().name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}))
    assert run_shard(sharded_build, seed=9, workers=1, show_progress=False).merged
    assert not lock.exists()


def test_a_second_extract_while_the_first_runs_exits_naming_it(tmp_path: Path) -> None:
    """The second run starts once the first holds its lock, and ends while the first still runs:
    it must exit 1 naming the holder (a broken lock would let both run and both exit 0)."""
    build = indexed_clips(tmp_path, 8, 40, 320, 240)
    command = [sys.executable, "-m", "ffx.cli", "extract", str(build), "--workers", "1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = build / ".locks" / "frames.part-00000-of-00001.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first extract ended before the second: give it more work"
    assert second.returncode == 1 and "another ffx extract is running" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.wait(120) == 0
    rows = pq.read_table(build / "frames.parquet").to_pylist()
    assert len(rows) == 8 * 30 and {row["status"] for row in rows} == {"ok"}


# --- repairs: a deleted or damaged output is redone, alone -----------------------------------------


def test_a_deleted_samples_file_redoes_that_video_alone(sharded_build: Path) -> None:
    good = shard_bytes(sharded_build)
    (sharded_build / "samples" / "real__clip2.tar").unlink()
    report = run_shard(sharded_build, workers=1, show_progress=False)
    assert (report.done_now, report.redone) == (1, 0)
    assert shard_bytes(sharded_build) == good


def test_a_damaged_samples_file_is_refused_not_packed(sharded_build: Path, capsys) -> None:
    good = shard_bytes(sharded_build)
    samples = sharded_build / "samples" / "real__clip2.tar"
    data = bytearray(samples.read_bytes())
    data[3000] ^= 0xFF
    samples.write_bytes(bytes(data))
    for shard in (sharded_build / "shards").glob("*.tar"):
        shard.unlink()  # the shards must be packed again from the samples files
    assert main(["shard", str(sharded_build)]) == 1
    assert f"{samples} was changed after `ffx shard` wrote it" in one_error_line(capsys)
    samples.unlink()
    assert main(["shard", str(sharded_build)]) == 0
    assert shard_bytes(sharded_build) == good


def test_rows_of_a_whole_run_win_over_an_older_part_run(tmp_path: Path) -> None:
    build = indexed_clips(tmp_path, 4, 12, 64, 48)
    run_extract(build, part=Part(0, 2), sampling="first:10", workers=1, show_progress=False)
    report = run_extract(build, sampling="first:5", workers=1, show_progress=False)
    assert report.merged and report.done_now == 4
    rows = pq.read_table(build / "frames.parquet").to_pylist()
    assert len(rows) == 4 * 5 and {row["frames_got"] for row in rows} == {5}
