"""Faults a user meets, each answered in one line naming the file and what to do (issue: every fault
gets one line): full disks, read-only builds, damaged tables, markup in names, file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ffx.cli import main
from ffx.pipeline.engine.parts import Part
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.extract import run_extract
from ffx.pipeline.stages.index import run_index
from ffx.pipeline.stages.record import write_build_record
from ffx.pipeline.stages.shard import run_shard
from ffx.synthetic import write_h264_index_video
from tests.assertions import error_line
from tests.conftest import REPO
from tests.generated import indexed_clips, make_cropped_build


@pytest.fixture
def sharded_build(tmp_path: Path) -> Path:
    build = make_cropped_build(tmp_path, videos_per_label=3, frames=3)
    assert run_shard(build, max_count=4, workers=1, show_progress=False).merged
    return build


def files_and_times(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    script = (
        "import os, sys; os.umask(int(sys.argv[2], 8)); from pathlib import Path; "
        "from ffx.pipeline.engine import atomic; atomic.write_bytes(Path(sys.argv[1]), b'x')"
    )
    for umask, mode in (("022", 0o644), ("077", 0o600), ("002", 0o664)):
        target = tmp_path / f"file-{umask}"
        subprocess.run([sys.executable, "-c", script, str(target), umask], check=True, cwd=REPO)
        assert stat.S_IMODE(target.stat().st_mode) == mode, umask


def test_shards_and_tables_are_readable_by_the_group_and_others_under_umask_022(tmp_path: Path) -> None:
    script = (
        "import os, sys; os.umask(0o022); sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
        "from tests.generated import make_cropped_build; from ffx.pipeline.stages.shard import run_shard; "
        "build = make_cropped_build(Path(sys.argv[1]), videos_per_label=2, frames=2); "
        "run_shard(build, workers=1, show_progress=False)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(REPO)], check=True, cwd=REPO)
    build = tmp_path / "build"
    written = [*build.glob("shards/*.tar"), build / "samples.parquet", build / "shards" / "index.json"]
    assert written and all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in written)


def on_a_full_disk(command: str, build: Path) -> str:
    """`ffx COMMAND BUILD --workers 1` where writes past 600 bytes fail as on a full disk (a
    file-size limit; Python ignores SIGXFSZ): its one stderr line, after exit status 1."""
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600)); "
        "from ffx.cli import main; sys.exit(main([sys.argv[1], sys.argv[2], '--workers', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, command, str(build)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 1
    error = error_line(done.stderr)
    assert "File too large" in error and "free space" in error and f"{build}/" in error
    return error


def test_a_full_disk_is_one_line_and_a_rerun_finishes(tmp_path: Path) -> None:
    build = indexed_clips(tmp_path, 3, 30, 320, 240)
    on_a_full_disk("extract", build)
    assert run_extract(build, workers=1, show_progress=False).merged  # room again: it finishes


def test_a_full_disk_while_sharding_is_one_line_and_a_rerun_finishes(tmp_path: Path) -> None:
    build = make_cropped_build(tmp_path, videos_per_label=2, frames=2)
    assert "Task(" not in on_a_full_disk("shard", build)  # no task repr
    assert run_shard(build, workers=1, show_progress=False).merged


def test_a_rerun_with_nothing_to_do_writes_nothing(sharded_build: Path, capsys) -> None:
    """So that a read-only build (a shared copy) can be checked and rerun."""
    root = json.loads((sharded_build / "index.json").read_text())["root"]
    write_build_record(sharded_build)
    before = files_and_times(sharded_build)
    for arguments in (
        ["extract", str(sharded_build)],
        ["crop", str(sharded_build)],
        ["shard", str(sharded_build)],
        ["status", str(sharded_build)],
        ["verify", str(sharded_build)],
        ["build", str(sharded_build / "manifest.toml"), "--root", root, "--build", str(sharded_build)],
    ):
        assert main(arguments) == 0, arguments
    assert files_and_times(sharded_build) == before


def test_a_damaged_table_names_itself_and_the_command_that_rebuilds_it(sharded_build: Path, capsys) -> None:
    frames = sharded_build / "frames.parquet"
    frames.write_bytes(frames.read_bytes()[:100])
    for command in ("crop", "shard", "status", "extract"):
        assert main([command, str(sharded_build)]) == 1, command
        error = error_line(capsys.readouterr().err)
        assert f"{frames} is not a readable table" in error and "delete it and run `ffx extract`" in error


def test_a_broken_or_empty_shard_index_and_missing_shards(sharded_build: Path, capsys) -> None:
    index = sharded_build / "shards" / "index.json"
    good = index.read_text()
    for broken in ("{not json", "{}", "[]"):
        index.write_text(broken)
        assert main(["verify", str(sharded_build)]) == 1
        assert f"{index} is not a shard index: run `ffx shard" in error_line(capsys.readouterr().err)
    index.write_text(good)
    for shard in (sharded_build / "shards").glob("*.tar"):
        shard.unlink()
    assert main(["verify", str(sharded_build)]) == 1
    assert ": missing" in capsys.readouterr().out
    assert main(["shard", str(sharded_build)]) == 0  # writes them again
    assert main(["verify", str(sharded_build)]) == 0


def test_markup_and_emoji_codes_in_names_stay_text(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    write_h264_index_video(root / "real" / "[bold]clip:x:.mp4", 3, 64, 48)
    (root / "fake" / "[").mkdir(parents=True)
    (root / "fake" / "[" / "x].mp4").write_bytes(b"not a video")
    build = tmp_path / "[red]build"
    assert main(["index", "folder", "--root", str(root), "--build", str(build)]) == 0
    assert main(["extract", str(build), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"indexed 2 videos into {build}" in out and "decode_error fake__-__x-" in out
    assert main(["extract", str(build), "--sample", "bad[/x]"]) == 1
    assert "bad[/x]" in error_line(capsys.readouterr().err)


def test_an_invalid_set_is_blamed_on_the_set(tmp_path: Path, capsys) -> None:
    (tmp_path / "data" / "real").mkdir(parents=True)
    arguments = ["index", "folder", "--root", str(tmp_path / "data"), "--build", str(tmp_path / "b")]
    assert main([*arguments, "--set", "crop.foo=1"]) == 1
    error = error_line(capsys.readouterr().err)
    assert "--set crop.foo=1: crop.foo: unknown field" in error and "folder.toml" not in error


def test_a_one_frame_video_says_its_reason_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_h264_index_video(root / "real" / "one.mp4", 1, 64, 48)
    build = tmp_path / "build"
    run_index(load_manifest("folder"), root, build)
    run_extract(build, workers=1, show_progress=False)
    import pyarrow.parquet as pq

    (row,) = pq.read_table(build / "frames.parquet").to_pylist()
    assert row["status"] == "short"
    assert row["error"] == "the video has 1 frames; 1 of 30 asked for (pyav, decord, opencv)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_build_reruns(sharded_build: Path) -> None:
    for path in sorted(sharded_build.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~0o222)
    sharded_build.chmod(0o555)
    try:
        assert main(["shard", str(sharded_build)]) == 0
    finally:
        sharded_build.chmod(0o755)


def test_a_copied_build_is_in_place_without_writing_its_shards_again(
    sharded_build: Path, tmp_path: Path
) -> None:
    """A copy (cp -a, rsync) gives every shard a new inode: the shards are hashed once against the
    recorded sha256 (their new identity recorded) instead of being written again, and from then on a
    rerun writes nothing (so a read-only copy, which cannot record it, is hashed each time)."""
    copy = tmp_path / "copy"
    shutil.copytree(sharded_build, copy, symlinks=True)
    before = files_and_times(copy)
    assert main(["shard", str(copy)]) == 0
    after = files_and_times(copy)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed <= {"shards/.plan.json", "shards", "build.json"} and "shards/.plan.json" in changed
    assert main(["shard", str(copy)]) == 0 and files_and_times(copy) == after
    damaged = sorted((copy / "shards").glob("*.tar"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-512])  # a copy that went wrong is still caught
    assert main(["verify", str(copy)]) == 1
    assert main(["shard", str(copy)]) == 0 and main(["verify", str(copy)]) == 0


def test_a_damaged_ledger_chunk_is_set_aside_and_its_videos_made_again(tmp_path: Path, capsys) -> None:
    """A part's chunk truncated (a node's disk, a bad copy): `ffx status` names it and changes
    nothing; the next run sets it aside in BUILD/damaged/, makes its videos again, and the build
    ends with the shards a clean build gives."""
    build = make_cropped_build(tmp_path / "damaged", videos_per_label=3, frames=2, side=16)
    first = run_shard(build, part=Part(0, 2), workers=1, show_progress=False)
    assert not first.merged
    (chunk,) = (build / "samples.parts" / "part-00000-of-00002").glob("chunk-*.parquet")
    chunk.write_bytes(chunk.read_bytes()[:50])
    before = files_and_times(build)
    assert main(["status", str(build)]) == 0
    said = capsys.readouterr().out
    assert "damaged: 1 ledger chunks of samples could not be read" in said, said
    assert files_and_times(build) == before  # status moved nothing
    second = run_shard(build, part=Part(1, 2), workers=1, show_progress=False)  # the other part: merges?
    assert not second.merged  # part 0's videos have no rows now: not merged
    assert [path.name for path in (build / "damaged" / "samples").iterdir()] == [
        f"part-00000-of-00002.{chunk.name}"
    ]
    again = run_shard(build, part=Part(0, 2), workers=1, show_progress=False)
    assert again.done_now == first.done_now and again.merged  # part 0's videos, made again
    clean = make_cropped_build(tmp_path / "clean", videos_per_label=3, frames=2, side=16)
    run_shard(clean, workers=1, show_progress=False)
    assert (build / "samples.parquet").read_bytes() == (clean / "samples.parquet").read_bytes()
    shards = sorted(path.name for path in (clean / "shards").glob("*.tar"))
    assert shards and all(
        (build / "shards" / n).read_bytes() == (clean / "shards" / n).read_bytes() for n in shards
    )
    assert main(["status", str(build)]) == 0
    assert "damaged: 1 ledger chunks" in capsys.readouterr().out  # what was set aside stays listed


def test_a_run_log_line_torn_by_a_full_disk_is_left_out(sharded_build: Path) -> None:
    from ffx.pipeline.engine import store

    log = sharded_build / "runs.jsonl"
    whole = store.stage_seconds(sharded_build)
    with open(log, "a", encoding="utf-8") as out:
        out.write('{"stage": "samples", "part": "part-00000-of-00001", "seco')  # a short append
    store.log_run(sharded_build, "samples", Part(), 2.0, 1)  # glued to the torn line: lost too
    store.log_run(sharded_build, "samples", Part(), 3.0, 1)
    assert store.stage_seconds(sharded_build) == whole | {"samples": round(whole["samples"] + 3.0, 3)}
    write_build_record(sharded_build)  # build.json is still written


def test_a_chunk_unreadable_for_a_moment_is_not_set_aside(tmp_path: Path, monkeypatch) -> None:
    """An I/O error (NFS's ESTALE, EIO) on a sound chunk stops the run in one line; the chunk
    stays, and the next run reads it."""
    from ffx.pipeline.engine import store

    build = make_cropped_build(tmp_path, videos_per_label=2, frames=1, side=16)
    run_shard(build, part=Part(0, 2), workers=1, show_progress=False)
    (chunk,) = (build / "samples.parts" / "part-00000-of-00002").glob("chunk-*.parquet")
    sound = store._parse_parquet

    def flaky(path, what, columns=None):
        if Path(path) == chunk:
            raise store.BuildError(f"{path} is not a readable table (IOError: Stale file handle)")
        return sound(path, what, columns)

    monkeypatch.setattr(store, "_parse_parquet", flaky)
    with pytest.raises(store.BuildError, match="Stale file handle"):
        run_shard(build, part=Part(1, 2), workers=1, show_progress=False)
    assert chunk.is_file() and not (build / "damaged").exists()
    monkeypatch.setattr(store, "_parse_parquet", sound)
    assert run_shard(build, part=Part(1, 2), workers=1, show_progress=False).merged


@pytest.mark.parametrize("damage", ["truncated", "a flipped byte", "a zeroed block"])
def test_a_chunk_damaged_in_any_way_is_set_aside(tmp_path: Path, damage: str) -> None:
    """Truncation gives pyarrow's ArrowInvalid, a flipped byte or a zeroed block often an OSError
    ("ZSTD decompression failed"): each is damage, judged on the bytes read into memory."""
    build = make_cropped_build(tmp_path, videos_per_label=2, frames=1, side=16)
    run_shard(build, part=Part(0, 2), workers=1, show_progress=False)
    (chunk,) = (build / "samples.parts" / "part-00000-of-00002").glob("chunk-*.parquet")
    data = bytearray(chunk.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "a flipped byte":
        data[len(data) // 3] ^= 0xFF
    else:
        data[64:576] = bytes(512)
    chunk.write_bytes(bytes(data))
    from ffx.pipeline.engine import store

    if not store._damaged(chunk):  # a flip that lands in slack space still parses: nothing to see
        pytest.skip("this damage left a readable table")
    run_shard(build, part=Part(1, 2), workers=1, show_progress=False)
    assert [path.name for path in (build / "damaged" / "samples").iterdir()] == [
        f"part-00000-of-00002.{chunk.name}"
    ]
    assert run_shard(build, part=Part(0, 2), workers=1, show_progress=False).merged
