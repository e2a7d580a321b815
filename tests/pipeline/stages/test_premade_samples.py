"""`ffx build`'s pass makes each video's samples from its crops' pixels still in memory
(samples/.premade/), and `ffx shard` takes them only when they were made from the very crops and
settings it would encode; its shards are those of the stage-by-stage path. No media needed."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ffx.pipeline.engine.parts import Part
from ffx.pipeline.engine.registry import stage_class
from ffx.pipeline.engine.stage import BuildOptions
from ffx.pipeline.media.color import convert
from ffx.pipeline.recipe.schema import FACES_SCHEMA
from ffx.pipeline.stages.crop import run_crop
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.shard import run_shard
from ffx.pipeline.workers.shard import as_stored, face_crop
from tests.generated import index_folder, portrait_clip

KEYS = [f"clip_{number}" for number in range(3)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for number, key in enumerate(KEYS):
        portrait_clip(root / f"{key}.mp4", 6, phase=number * 0.9)
    return root


def shard_bytes(build: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in build.glob("shards/*.tar")}


def samples_rows(build: Path) -> list[dict]:
    return pq.read_table(build / "samples.parquet").drop_columns(["made_from"]).to_pylist()


def stage_by_stage(clips: Path, build: Path) -> Path:
    index_folder(clips, build, "first:4", 96)
    run_extract(build, show_progress=False)
    run_crop(build, show_progress=False)
    run_shard(build, show_progress=False)
    return build


def the_pass(clips: Path, build: Path) -> Path:
    """`ffx build`'s steps before the shards: extract and crop in one pass."""
    index_folder(clips, build, "first:4", 96)
    options = BuildOptions(Part(), None, "cpu", None, False)
    for name in ("frames", "faces"):
        stage_class(name).build_step(build, options)
    return build


def members(samples_file: Path) -> dict[str, bytes]:
    with tarfile.open(samples_file) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_the_pass_makes_the_samples_and_shard_takes_them_unchanged(clips: Path, tmp_path: Path) -> None:
    build = the_pass(clips, tmp_path / "build")
    premade = build / "samples" / ".premade"
    assert sorted(path.name for path in premade.iterdir()) == sorted(
        f"{key}.{ext}" for key in KEYS for ext in ("json", "tar")
    )
    crops = {key: len(list((build / "faces" / key).glob("*.png"))) for key in KEYS}
    for key in KEYS:  # a row per crop, in the tar the pass wrote
        facts = json.loads((premade / f"{key}.json").read_bytes())
        assert len(facts["rows"]) == crops[key] == 4
        assert sorted(facts["files"]) == sorted(f"faces/{key}/{frame:06d}.png" for frame in range(4))
    made = {key: (premade / f"{key}.tar").stat().st_ino for key in KEYS}
    run_shard(build, show_progress=False)
    assert not premade.exists()
    # Taken, not encoded again: each samples file is the very file the pass wrote (moved in place).
    assert {key: (build / "samples" / f"{key}.tar").stat().st_ino for key in KEYS} == made
    reference = stage_by_stage(clips, tmp_path / "reference")
    assert shard_bytes(build) == shard_bytes(reference) and len(shard_bytes(build)) > 0
    assert samples_rows(build) == samples_rows(reference)


def test_a_crop_replaced_after_the_pass_is_encoded_from_its_file(clips: Path, tmp_path: Path) -> None:
    build = the_pass(clips, tmp_path / "build")
    crop = build / "faces" / KEYS[1] / "000002.png"
    flipped = cv2.imdecode(np.frombuffer(crop.read_bytes(), np.uint8), cv2.IMREAD_COLOR)[:, ::-1]
    crop.write_bytes(cv2.imencode(".png", flipped)[1].tobytes())  # another crop: its file rules
    run_shard(build, show_progress=False)
    samples = members(build / "samples" / f"{KEYS[1]}.tar")
    assert samples[f"{KEYS[1]}_0002.rgb.png"] == crop.read_bytes()
    lab = cv2.imdecode(np.frombuffer(samples[f"{KEYS[1]}_0002.lab.png"], np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(lab[..., ::-1], convert(cv2.cvtColor(flipped, cv2.COLOR_BGR2RGB), "lab"))
    others = members(build / "samples" / f"{KEYS[0]}.tar")
    assert others[f"{KEYS[0]}_0002.rgb.png"] == (build / "faces" / KEYS[0] / "000002.png").read_bytes()


def test_a_premade_file_gone_or_damaged_is_encoded_from_the_crops(clips: Path, tmp_path: Path) -> None:
    build = the_pass(clips, tmp_path / "build")
    premade = build / "samples" / ".premade"
    (premade / f"{KEYS[0]}.tar").unlink()  # its JSON left without it
    (premade / f"{KEYS[1]}.json").write_text("{not json")
    sound = (premade / f"{KEYS[2]}.tar").stat().st_ino
    run_shard(build, show_progress=False)
    assert (build / "samples" / f"{KEYS[2]}.tar").stat().st_ino == sound  # the sound one is taken
    assert not premade.exists()
    reference = stage_by_stage(clips, tmp_path / "reference")
    assert shard_bytes(build) == shard_bytes(reference)


def test_samples_asked_with_other_settings_are_encoded_again(clips: Path, tmp_path: Path) -> None:
    build = the_pass(clips, tmp_path / "build")
    run_shard(build, spaces="rgb,ycbcr", show_progress=False)  # the pass made four spaces
    names = members(build / "samples" / f"{KEYS[0]}.tar")
    assert sorted(name.split(".", 1)[1] for name in names if name.startswith(f"{KEYS[0]}_0000.")) == [
        "cls",
        "json",
        "rgb.png",
        "ycbcr.png",
    ]
    assert len(names) == 4 * 4  # four crops of four members each
    assert not (build / "samples" / ".premade").exists()


def test_a_row_in_the_workers_hands_gives_the_crop_its_table_row_gives() -> None:
    """A box scaled back from the detector's copy is a float64 that faces.parquet stores as
    float32: the pass's samples are made for the crop as the table will hold it."""
    row = {
        "key": "k", "frame_index": np.int64(3), "track": 0, "x1": 1 / 3, "y1": 2 / 3, "x2": 100.1,
        "y2": 120.7, "crop_x1": np.int64(0), "crop_y1": 1, "crop_x2": 150, "crop_y2": 170,
        "prob": 0.987654321, "landmarks": [0.1] * 10, "dense_landmarks": [10 / 3, 20 / 3],
        "crop_matrix": None, "n_faces": 1, "box_source": "detected", "path": "faces/k/000003.png",
        "mask_path": "", "status": "ok", "error": "",
    }  # fmt: skip
    read_back = pa.Table.from_pylist([row], FACES_SCHEMA).to_pylist()[0]
    assert face_crop(as_stored(row)) == face_crop(read_back)
    assert face_crop(row) != face_crop(read_back)  # the float64 values would not match
