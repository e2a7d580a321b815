"""Issue 23: what a no-op rerun remembers (engine.memo) is never stale, and the columnar plans give
the same digests as the row-by-row reference."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.pipeline.engine import identity, memo
from ffx.pipeline.engine.builddir import BuildDir
from ffx.pipeline.engine.currency import chain_states, load_recipe, proven_made_from, write_recipe
from ffx.pipeline.engine.rows import RowsByKey, json_texts
from ffx.pipeline.engine.stage import _outputs_gone, run_stage
from ffx.pipeline.stages import crop as crop_stage
from ffx.pipeline.stages import extract as extract_stage
from ffx.pipeline.stages import shard as shard_stage
from ffx.pipeline.stages.crop import CropStage, frames_identities, run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.shard import SampleStage, run_shard
from ffx.pipeline.stages.status import build_status
from ffx.pipeline.stages.verify import verify_shards
from tests.generated import make_cropped_build, write_stamped


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    build = make_cropped_build(tmp_path, videos_per_label=3, frames=2, side=16)
    run_shard(build, workers=1, show_progress=False)
    return build


def test_frames_identities_equal_the_row_by_row_digest() -> None:
    errors = ["", 'a "quoted" error', "tab\there", "é ünïcode", "back\\slash", "newline\nerror"]
    rows = [
        {
            "key": f"video{number % 4}",
            "frame_index": -1 if number == 5 else number,
            "pixels_sha256": "" if number == 5 else hashlib.sha256(str(number).encode()).hexdigest(),
            "status": "ok" if number != 5 else "missing",
            "error": errors[number % len(errors)],
        }
        for number in range(24)
    ]
    table = pa.Table.from_pylist(rows[::-1])  # not in key order: grouping keeps each key's order
    expected = {}
    for key in {row["key"] for row in rows}:
        expected[key] = identity.frames_identity([row for row in rows[::-1] if row["key"] == key])
    assert frames_identities(RowsByKey(table)) == expected


def test_json_texts_write_what_json_dumps_writes() -> None:
    values = ["plain", 'q"uote', None, "ü", "\x01", ""]
    assert json_texts(pa.chunked_array([values])).to_pylist() == [json.dumps(value) for value in values]
    numbers = [0, -3, None, 2**40]
    assert json_texts(pa.array(numbers, pa.int64())).to_pylist() == [json.dumps(value) for value in numbers]


def test_a_changed_faces_table_is_planned_again_not_recalled(sharded: Path) -> None:
    """The samples of a video whose face rows changed (a box moved: same inputs, other output, as
    a crop on another device gives) are redone, though the samples were remembered as current."""
    build = BuildDir(sharded)
    assert proven_made_from(build, "samples", load_recipe(build)) is not None  # remembered
    faces = pq.read_table(build.table("faces"))
    rows = faces.to_pylist()
    moved = next(row for row in rows if row["path"])
    moved["x1"] += 1.0
    pq.write_table(pa.Table.from_pylist(rows, schema=faces.schema), build.table("faces"))
    assert proven_made_from(build, "samples", load_recipe(build)) is None
    report = run_shard(sharded, workers=1, show_progress=False)
    assert report.done_now == 1 and report.items == 7


def test_a_remembered_fact_is_not_taken_for_other_settings(sharded: Path) -> None:
    build = BuildDir(sharded)
    recipe = load_recipe(build)
    rgb = recipe.model_copy(update={"spaces": ("rgb",)})
    assert SampleStage().plan(build, rgb).made_from != SampleStage().plan(build, recipe).made_from


def test_a_copied_build_keeps_its_facts_and_its_rerun_writes_nothing(sharded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)  # new inodes and times, the same bytes
    assert proven_made_from(BuildDir(copy), "faces", load_recipe(BuildDir(copy))) is not None
    before = {path: path.read_bytes() for path in (copy / ".memo").iterdir()}
    for rerun in (run_extract, run_crop, run_shard):
        report = rerun(copy, show_progress=False)
        assert report.done_now == 0 and report.merged
    assert {path: path.read_bytes() for path in (copy / ".memo").iterdir()} == before


def test_a_build_named_by_a_relative_path_reruns_as_a_no_op(sharded: Path, monkeypatch) -> None:
    monkeypatch.chdir(sharded.parent)
    assert run_shard(Path(sharded.name), workers=1, show_progress=False).done_now == 0
    (sharded / "samples" / "real__clip1.tar").unlink()
    assert run_shard(Path(sharded.name), workers=1, show_progress=False).done_now == 1  # that one alone


def test_a_fact_about_the_faces_holds_only_while_the_landmark_model_is_unchanged(
    sharded: Path, tmp_path: Path
) -> None:
    """A landmark model of the user's own is read by the crop plan (its sha256 shapes every crop):
    what is remembered about faces and every table after it is keyed by it too."""
    build = BuildDir(sharded)
    model = tmp_path / "shape_predictor.dat"
    model.write_bytes(b"model one")
    recipe = load_recipe(build)
    write_recipe(
        build, recipe.model_copy(update={"crop": recipe.crop.model_copy(update={"landmarks": str(model)})})
    )
    states = {name: chain_states(build, name) for name in ("frames", "faces", "samples")}
    model.write_bytes(b"model two")
    assert chain_states(build, "frames") == states["frames"]  # extract does not read it
    assert (
        chain_states(build, "faces") != states["faces"]
        and chain_states(build, "samples") != states["samples"]
    )


def test_a_merge_with_a_landmark_model_of_ones_own_is_remembered(
    sharded: Path, tmp_path: Path, monkeypatch
) -> None:
    """The fact a merge leaves is keyed by every file the plan read, the model too: the next
    command recalls it rather than planning again."""
    model = tmp_path / "shape_predictor.dat"
    model.write_bytes(b"a model of one's own")
    monkeypatch.setattr(crop_stage, "model_file", Path)  # no dlib needed to name the file
    monkeypatch.setattr(
        crop_stage, "model_sha256", lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
    )
    build = BuildDir(sharded)
    recipe = load_recipe(build)
    crop = recipe.crop.model_copy(update={"landmarks": str(model)})
    write_recipe(build, recipe.model_copy(update={"crop": crop}))
    write_stamped(
        sharded, "faces", pq.read_table(build.table("faces")).drop_columns(["made_from"]).to_pylist()
    )
    # The stage alone (`ffx shard` would go on to check the samples, remembering them itself).
    assert run_stage(SampleStage(), build, workers=1, show_progress=False).merged  # redone, merged
    assert memo.recall(build, "samples.current", chain_states(build, "samples")) == 7


def test_output_names_are_split_as_paths_whatever_they_hold(tmp_path: Path) -> None:
    folder = tmp_path / "faces" / "a\nb"
    folder.mkdir(parents=True)
    (folder / "000000.png").write_bytes(b"")
    outputs = pa.table(
        {
            "key": ["kept", "kept", "gone", "flat"],
            "path": ["faces/a\nb/000000.png", str(folder / "000000.png"), "faces/a\nb/000001.png", "top.png"],
        }
    )
    (tmp_path / "top.png").write_bytes(b"")
    assert _outputs_gone(BuildDir(tmp_path), outputs, set()) == {"gone"}
    assert _outputs_gone(BuildDir(tmp_path), outputs, {"gone"}) == set()


def test_a_build_that_cannot_be_written_reruns_without_remembering(sharded: Path, monkeypatch) -> None:
    """A read-only copy (or a full disk): nothing is remembered, each command proves it again."""
    shutil.rmtree(sharded / ".memo")

    write_json = memo.atomic.write_json

    def refused(path: Path, value) -> None:
        if path.parent.name == ".memo":
            raise PermissionError(13, "Permission denied", str(path))
        write_json(path, value)

    monkeypatch.setattr(memo.atomic, "write_json", refused)
    for rerun in (run_extract, run_crop, run_shard):
        assert rerun(sharded, show_progress=False).done_now == 0
    assert [status.currency.ok for status in build_status(sharded)[1:]] == [True] * 4
    assert not (sharded / ".memo").exists()


def test_a_no_op_build_digests_no_row(sharded: Path, monkeypatch) -> None:
    """Once remembered, a rerun, `ffx status` and `ffx verify` read each table's digests rather than
    make them again: no per-video digest, no layout (at DFDC's size, 3.6 M rows)."""
    calls: Counter = Counter()

    def counting(name: str, function):
        return lambda *args: calls.update([name]) or function(*args)

    monkeypatch.setattr(identity, "digest", counting("crop_made_from", identity.digest))
    monkeypatch.setattr(extract_stage, "digest", counting("extract", extract_stage.digest))
    monkeypatch.setattr(shard_stage, "digest", counting("shard", shard_stage.digest))
    monkeypatch.setattr(crop_stage, "frames_identities", counting("frames", crop_stage.frames_identities))
    for rerun in (run_extract, run_crop, run_shard):
        assert rerun(sharded, show_progress=False).done_now == 0
    build_status(sharded)
    assert verify_shards(sharded).problems == []
    assert not calls


def test_a_faces_row_changed_by_hand_is_seen_by_status_and_verify(sharded: Path) -> None:
    """The layout remembered for the samples is dropped with the samples table it was drawn from."""
    samples = pq.read_table(sharded / "samples.parquet")
    kept = samples.filter(pa.compute.not_equal(samples.column("key"), samples.column("key")[0]))
    pq.write_table(kept, sharded / "samples.parquet")
    statuses = {status.stage: status for status in build_status(sharded)}
    assert not statuses["samples"].currency.ok and "shards" not in statuses
    assert verify_shards(sharded).problems
    assert CropStage().plan(BuildDir(sharded), load_recipe(BuildDir(sharded))).made_from  # unaffected
