"""Shared fixtures: generated dataset trees (empty files are enough: the index does not decode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]  # the checkout, whose files tests read (README, ffx/, bench/)
SHARED_MEDIA = REPO.parent / "shared" / "media"


def touch(root: Path, relative: str, content: bytes = b"\0") -> Path:
    """Create a small file at root/relative (parents included)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# Ten FF++ ids in five pairs: 3 train pairs, 1 val, 1 test (official-style split files).
FFPP_PAIRS = {
    "train": [["000", "003"], ["001", "004"], ["002", "005"]],
    "val": [["006", "007"]],
    "test": [["008", "009"]],
}
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


@pytest.fixture
def ffpp_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A FaceForensics++ c23 tree with both a_b and b_a fakes, plus official split files."""
    root = tmp_path / "ffpp"
    for pairs in FFPP_PAIRS.values():
        for first, second in pairs:
            for video_id in (first, second):
                touch(root, f"original_sequences/youtube/c23/videos/{video_id}.mp4")
            for method in FFPP_METHODS:
                touch(root, f"manipulated_sequences/{method}/c23/videos/{first}_{second}.mp4")
                touch(root, f"manipulated_sequences/{method}/c23/videos/{second}_{first}.mp4")
    splits = tmp_path / "splits"
    splits.mkdir()
    for split, pairs in FFPP_PAIRS.items():
        (splits / f"{split}.json").write_text(json.dumps(pairs))
    return root, splits


def run_cli(arguments: list[str]) -> tuple[int, str]:
    """`ffx ARGUMENTS` and what it printed (rich's console writes to the current sys.stdout)."""
    import contextlib
    import io

    from ffx.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(arguments)
    return code, out.getvalue()


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """The demo's work folder after one `ffx demo` (built, trained, evaluated, applied), and what
    it printed: shared by the tests of the demo and of `ffx predict`."""
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    code, out = run_cli(["demo", "--workdir", str(workdir)])
    assert code == 0, out
    return workdir, out
