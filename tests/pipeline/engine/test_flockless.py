"""Issue 24 on a real file system whose flock fails: a FUSE passthrough (tests/flockless_fs.py)
refusing flock and POSIX locks with ENOLCK, as NFS without a lock manager does (Lustre mounted
without flock refuses them too). Two shard parts finishing together on it merge and lay out the
shards once, as one run does; a stale lock of another host is taken over by exactly one run.
Needs fuse3 (`bash scripts/flockless-fs.sh install`, root); skipped without it, except under
CI=true, where a missing FUSE is a failure (.ci/run installs it)."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest

from ffx.pipeline.stages.shard import run_shard
from tests import flockless_fs
from tests.assertions import contest_a_stale_lock, shard_two_parts_at_once
from tests.generated import make_cropped_build


@pytest.fixture
def flockless(tmp_path: Path):
    """A folder on the flock-less mount (set-up asserts that flock fails there)."""
    if reason := flockless_fs.unavailable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    with flockless_fs.mounted(tmp_path / "backing", tmp_path / "mount") as mount:
        assert flockless_fs.flock_errno(mount) == errno.ENOLCK
        probe = mount / "probe"
        probe.write_bytes(b"")
        with open(probe, "rb+") as handle, pytest.raises(OSError) as refused:
            import fcntl

            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert refused.value.errno == errno.ENOLCK
        probe.unlink()
        yield mount


def test_two_parts_finishing_together_on_a_flockless_mount_merge_once(
    flockless: Path, tmp_path: Path
) -> None:
    build = make_cropped_build(flockless / "parts", videos_per_label=4, frames=2, side=16)
    shard_two_parts_at_once(build, multiprocessing.get_context("spawn"))
    whole = make_cropped_build(tmp_path / "whole", videos_per_label=4, frames=2, side=16)  # not on FUSE
    run_shard(whole, workers=1, show_progress=False)
    names = sorted(path.name for path in (whole / "shards").iterdir() if not path.name.startswith("."))
    assert (
        sorted(path.name for path in (build / "shards").iterdir() if not path.name.startswith(".")) == names
    )
    assert {name for name in names if name.endswith(".tar")} and "index.json" in names
    for name in names:
        assert (build / "shards" / name).read_bytes() == (whole / "shards" / name).read_bytes(), name
    assert (build / "samples.parquet").read_bytes() == (whole / "samples.parquet").read_bytes()
    assert not (build / "samples.parts").exists() and not list((build / ".locks").glob("*.lock"))


def test_a_stale_lock_of_another_host_on_a_flockless_mount_is_taken_over_once(flockless: Path) -> None:
    contest_a_stale_lock(flockless / ".locks" / "samples.merge.lock")
