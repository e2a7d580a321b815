"""`ffx build`'s one decode per frame: extract and crop in one worker pass, full frames stored
only when asked, and a standalone `ffx crop` that decodes again and checks every frame's hash.
No media needed: clips of the bundled demo portrait."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.pipeline.engine.parts import Part
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import run_build
from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.shard import run_shard
from tests.assertions import crops_digest, faces_by_key, kill_mid_run
from tests.generated import index_folder, portrait_clip

RECIPE = {"sampling": "first:6", "crop.size": 128}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for number in range(4):
        portrait_clip(root / f"clip_{number}.mp4", 8, phase=number * 0.9)
    return root


@pytest.fixture(scope="module")
def staged(clips: Path, tmp_path_factory) -> Path:
    """The same clips through `ffx extract`, `ffx crop` and `ffx shard`: frames stored as PNGs."""
    build = index_folder(clips, tmp_path_factory.mktemp("staged") / "build", "first:6", 128)
    run_extract(build, show_progress=False)
    run_crop(build, show_progress=False)
    run_shard(build, show_progress=False)
    return build


def shard_bytes(build: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(build.glob("shards/*.tar"))
    }


def frames_rows(build: Path) -> list[dict]:
    return pq.read_table(build / "frames.parquet").to_pylist()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_build_decodes_once_stores_no_frames_and_gives_the_staged_crops_and_shards(
    clips: Path, staged: Path, tmp_path: Path
) -> None:
    build = tmp_path / "build"
    report = run_build(load_manifest("folder", RECIPE), clips, build, workers=2, show_progress=False)
    extract, crop, shard = report.stages
    assert extract.counts["faces cropped"] == 24 and extract.counts["frames detected"] == 24
    assert (crop.items, crop.skipped, crop.merged) == (4, 4, True)  # nothing left for the crop step
    assert shard.merged and not report.waiting
    assert not list(build.glob("frames/**/*.png"))
    rows, reference = frames_rows(build), frames_rows(staged)
    assert {row["path"] for row in rows} == {""}
    for row, stored in zip(rows, reference, strict=True):
        # The hash is of the decoded pixels: the same as the staged build's lossless PNG holds.
        rgb = cv2.cvtColor(cv2.imread(str(staged / stored["path"])), cv2.COLOR_BGR2RGB)
        height, width, _ = rgb.shape
        expected = hashlib.sha256(f"{height}x{width}x3:".encode() + rgb.tobytes()).hexdigest()
        assert row["pixels_sha256"] == stored["pixels_sha256"] == expected
    assert crops_digest(build) == crops_digest(staged)  # crops and faces.parquet, byte for byte
    assert shard_bytes(build) == shard_bytes(staged) and len(shard_bytes(build)) >= 1
    # The intermediates are the crops alone: well under half of the shards' bytes.
    assert folder_bytes(build / "faces") <= 0.5 * folder_bytes(build / "shards")
    # Run again: nothing to do at any stage; nor for `ffx extract`, which follows the build's recipe.
    again = run_build(load_manifest("folder", RECIPE), clips, build, workers=2, show_progress=False)
    assert [stage.done_now for stage in again.stages] == [0, 0, 0]
    assert run_extract(build, retry_failed=True, show_progress=False).done_now == 0
    assert not list(build.glob("frames/**/*.png"))


def test_crop_decodes_the_video_again_when_frames_are_not_kept(
    clips: Path, staged: Path, tmp_path: Path
) -> None:
    build = tmp_path / "build"
    run_build(load_manifest("folder", RECIPE), clips, build, show_progress=False)
    # Another crop size: `ffx crop` alone has no PNG to read, so it decodes and checks each hash.
    report = run_crop(build, size=96, show_progress=False)
    assert (report.redone, report.outputs, report.failed) == (4, 24, [])
    run_crop(staged, size=96, show_progress=False)
    try:
        assert crops_digest(build) == crops_digest(staged)
    finally:
        run_crop(staged, size=128, show_progress=False)  # the module's fixture, as it was


def test_a_video_that_decodes_to_other_pixels_is_a_decode_mismatch(clips: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    run_build(load_manifest("folder", RECIPE), clips, build, show_progress=False)
    # As if the decoder changed since extract: frame 3 of clip_1 was recorded with other pixels.
    table = pq.read_table(build / "frames.parquet")
    rows = table.to_pylist()
    altered = next(row for row in rows if row["key"] == "clip_1" and row["frame_index"] == 3)
    altered["pixels_sha256"] = "0" * 64
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), build / "frames.parquet")
    report = run_crop(build, show_progress=False)
    assert (report.redone, report.skipped) == (1, 3)  # only the video whose frames changed
    [(key, status, error)] = report.failed
    assert (key, status) == ("clip_1", "decode_mismatch")
    assert "frame 3 decodes to other pixels" in error and "ffx build --keep-frames" in error
    assert {row["status"] for row in faces_by_key(build)["clip_1"]} == {"decode_mismatch"}
    assert not (build / "faces" / "clip_1").exists()
    # The repair the message names: extract again, keeping the frames; then every crop is back.
    repaired = run_build(load_manifest("folder", RECIPE), clips, build, keep_frames=True, show_progress=False)
    assert repaired.stages[0].redone == 4 and len(list(build.glob("frames/*/*.png"))) == 24
    assert {row["status"] for rows in faces_by_key(build).values() for row in rows} == {"ok"}


def test_fakes_reuse_their_originals_boxes_in_the_same_pass(tmp_path: Path) -> None:
    root = tmp_path / "ffpp"
    originals = "original_sequences/youtube/c23/videos"
    portrait_clip(root / originals / "000.mp4", 6, 0.0)
    portrait_clip(root / originals / "001.mp4", 6, 1.7)
    portrait_clip(root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4", 6, 0.0, fake=True)
    recipe = load_manifest("ffpp-c23", RECIPE, ['layout.methods=["Deepfakes"]'])
    build = tmp_path / "build"
    report = run_build(recipe, root, build, show_progress=False)
    extract, crop, _shard = report.stages
    assert extract.counts == {"frames detected": 12, "faces cropped": 18, "boxes reused": 6}
    assert crop.skipped == 3
    # The same as the staged path, where the fake is cropped by `ffx crop` after its original.
    staged = tmp_path / "staged"
    run_index(recipe, root, staged)
    run_extract(staged, show_progress=False)
    assert run_crop(staged, show_progress=False).counts["boxes reused"] == 6
    assert crops_digest(build) == crops_digest(staged)


def test_parts_give_the_whole_build(clips: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    run_build(load_manifest("folder", RECIPE), clips, whole, show_progress=False)
    split = tmp_path / "split"
    for _round in range(3):  # each part stops at a stage the others have not finished
        reports = [
            run_build(
                load_manifest("folder", RECIPE), clips, split, part=Part(n, 3), workers=1, show_progress=False
            )
            for n in range(3)
        ]
    assert not any(report.waiting for report in reports)
    assert crops_digest(split) == crops_digest(whole) and shard_bytes(split) == shard_bytes(whole)


def test_kill_9_during_the_pass_then_resume_is_byte_identical(
    clips: Path, staged: Path, tmp_path: Path
) -> None:
    build = tmp_path / "build"
    # Each finished video is written as its own chunk at once (not every 2 s): the kill then lands
    # between videos however fast the machine is.
    script = (
        "import sys; from ffx.pipeline.recipe.manifest import load_manifest; "
        "from ffx.pipeline.stages.build import run_build; from ffx.pipeline.engine import store; "
        "writer = store.Ledger.writer; "
        "store.Ledger.writer = lambda self, part, **_: writer(self, part, flush_rows=1, flush_seconds=0); "
        f"run_build(load_manifest('folder', {RECIPE!r}), sys.argv[1], sys.argv[2], workers=1, "
        "show_progress=False)"
    )
    kill_mid_run(script, [str(clips), str(build)], build, "frames", chunks=1, seconds=180)
    resumed = run_build(load_manifest("folder", RECIPE), clips, build, workers=1, show_progress=False)
    assert resumed.stages[0].skipped >= 1 and not resumed.waiting
    assert crops_digest(build) == crops_digest(staged) and shard_bytes(build) == shard_bytes(staged)
    assert not list((build / "faces").glob(".*")) and not list((build / "frames").glob(".*"))


def test_a_kept_frame_altered_after_extract_is_named_when_cropped_again(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    portrait_clip(root / "clip.mp4", 4, phase=0.3)
    build = index_folder(root, tmp_path / "build", "first:3", 128)
    run_extract(build, show_progress=False)
    run_crop(build, show_progress=False)
    frame = build / "frames" / "clip" / "000001.png"
    pixels = cv2.imread(str(frame))
    pixels[0, 0] ^= 1  # one bit of one pixel
    cv2.imwrite(str(frame), pixels)
    report = run_crop(build, size=96, show_progress=False)
    [(key, status, error)] = report.failed
    assert (key, status) == ("clip", "error")
    assert error.startswith(f"{frame} no longer holds the frame extracted") and "ffx extract" in error


def test_samples_removed_after_the_layout_when_asked(clips: Path, staged: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    recipe = load_manifest("folder", RECIPE | {"shard.keep_samples": False})
    run_build(recipe, clips, build, show_progress=False)
    assert not (build / "samples").exists() and shard_bytes(build) == shard_bytes(staged)
    # Nothing is redone for the missing samples/: they were removed on purpose.
    assert [stage.done_now for stage in run_build(recipe, clips, build, show_progress=False).stages] == [
        0,
        0,
        0,
    ]
    assert folder_bytes(build / "faces") <= 0.5 * folder_bytes(build / "shards")
    # A shard to write again: the samples of its videos are encoded again (the same bytes, each
    # record checked against its sha256), the shard written, and samples/ removed again.
    damaged = sorted((build / "shards").glob("*.tar"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-1024])
    report = run_shard(build, show_progress=False)
    assert report.counts["shards written"] == 1 and shard_bytes(build) == shard_bytes(staged)
    assert not (build / "samples").exists()
    report = run_shard(build, keep_samples=True, show_progress=False)  # kept from now on
    assert report.redone == 4 and shard_bytes(build) == shard_bytes(staged)
    assert len(list((build / "samples").glob("*.tar"))) == 4


def test_a_new_video_rewrites_only_the_shards_it_changes_without_samples(clips: Path, tmp_path: Path) -> None:
    """Samples dropped: one more video re-writes the shards whose members change (its split's),
    encoding again only their videos' samples; the other shards stay as they are, untouched."""
    recipe = load_manifest("folder", RECIPE | {"shard.keep_samples": False})
    more = tmp_path / "more"
    shutil.copytree(clips, more)
    build = tmp_path / "build"
    run_build(recipe, clips, build, show_progress=False)
    before = {path.name: path.stat().st_mtime_ns for path in (build / "shards").glob("*.tar")}
    portrait_clip(more / "clip_4.mp4", 8, phase=3.7)
    run_build(recipe, more, build, show_progress=False)
    clean = tmp_path / "clean"
    run_build(recipe, more, clean, show_progress=False)
    assert shard_bytes(build) == shard_bytes(clean) and not (build / "samples").exists()
    after = {path.name: path.stat().st_mtime_ns for path in (build / "shards").glob("*.tar")}
    untouched = {name for name in before if after.get(name) == before[name]}
    assert untouched and len(untouched) == len(before) - 1  # only the new video's split's shard


def test_the_first_extract_pass_decides_whether_frames_are_kept(
    clips: Path, staged: Path, tmp_path: Path
) -> None:
    """Unset in the recipe: `ffx extract` keeps them (as ever), `ffx build` does not, even on a
    build `ffx index` made first; the choice is recorded and followed from then on."""
    assert load_manifest(staged / "manifest.toml").extract.keep_frames is True
    build = index_folder(clips, tmp_path / "build", "first:6", 128)
    assert load_manifest(build / "manifest.toml").extract.keep_frames is None
    run_build(load_manifest("folder", RECIPE), clips, build, show_progress=False)
    assert load_manifest(build / "manifest.toml").extract.keep_frames is False
    assert not list(build.glob("frames/**/*.png")) and shard_bytes(build) == shard_bytes(staged)
