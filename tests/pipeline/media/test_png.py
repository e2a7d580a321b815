"""`png_encoder = "libdeflate"` (ffx/pipeline/media/png.py): PNGs that every reader decodes to the
very pixels written, the same bytes on every CPU model (checked under qemu's Haswell and Nehalem,
with this machine's own kernels) and in every process, and the bundled recipes' choice of it."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ffx.pipeline.media.color import convert
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.png import libdeflate_png
from ffx.pipeline.recipe.manifest import load_manifest, manifest_changes
from tests.conftest import REPO as ROOT

PORTRAIT = ROOT / "ffx" / "assets" / "portrait.jpg"
LEVELS = range(10)  # every png_level a recipe takes
# Encodes the images of an .npy file with libdeflate_png at every level and prints one sha256 of them
# all; it imports numpy, deflate and ffx's png module only, so it starts in seconds under qemu.
ENCODE_ALL = (
    "import hashlib, sys; import numpy as np; sys.path.insert(0, sys.argv[1]); "
    "from ffx.pipeline.media.png import libdeflate_png; "
    "images = np.load(sys.argv[2]); h = hashlib.sha256(); "
    "[h.update(libdeflate_png(image, level)) for level in range(10) for image in images]; "
    "print(h.hexdigest())"
)


def portrait_spaces(side: int = 256) -> list[np.ndarray]:
    """The bundled portrait's face region in the four colour spaces, and a grey mask of it."""
    rgb = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    crop = cv2.resize(rgb[: min(height, width), : min(height, width)], (side, side))
    grey = (cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) > 128).astype(np.uint8) * 255
    return [convert(crop, space) for space in ("rgb", "lab", "hsv", "ycbcr")] + [grey]


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (33, 64), (2, 300, 3)])
def test_every_reader_decodes_the_pixels_written(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for level in LEVELS:
        data = encode_png(pixels, level, "libdeflate")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)  # PIL checks the CRCs
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(decoded[..., ::-1] if pixels.ndim == 3 else decoded, pixels)


def test_a_crop_decodes_as_the_opencv_encoders_png_does() -> None:
    """The pixels, not the size: on this smooth, upscaled portrait libdeflate's files are up to 10 %
    larger than OpenCV's RLE ones; on real crops 18 % smaller (bench/png.py, docs/benchmarks.md)."""
    for image in portrait_spaces(512):
        libdeflate, opencv = encode_png(image, 1, "libdeflate"), encode_png(image, 1, "opencv")
        assert np.array_equal(
            cv2.imdecode(np.frombuffer(libdeflate, np.uint8), cv2.IMREAD_UNCHANGED),
            cv2.imdecode(np.frombuffer(opencv, np.uint8), cv2.IMREAD_UNCHANGED),
        )


def test_an_image_png_cannot_hold_is_refused() -> None:
    for pixels in (np.zeros((2, 2, 3), np.uint16), np.zeros((2, 2, 4), np.uint8)):
        with pytest.raises(ValueError, match="cannot write a PNG"):
            libdeflate_png(pixels, 1)


def test_every_bundled_recipe_encodes_with_libdeflate_and_an_opencv_build_keeps_its_own() -> None:
    """A build made before the recipes named libdeflate (its manifest.toml has no png_encoder, read as
    opencv) is not silently re-encoded: the change is one field, and its --set keeps the build's."""
    from ffx.pipeline.recipe.manifest import recipe_names

    assert {load_manifest(name).png_encoder for name in recipe_names()} == {"libdeflate"}
    older = load_manifest("ffpp-c23", assignments=['png_encoder="opencv"'])
    assert manifest_changes(older, load_manifest("ffpp-c23")) == [("png_encoder", "opencv", "libdeflate")]


def test_the_same_bytes_in_a_fresh_process_after_other_work(tmp_path: Path) -> None:
    """A pure function of the pixels and the level: no state carried from earlier calls or other
    images, and nothing read from memory the input does not hold (what once made ISA-L differ)."""
    images = portrait_spaces()
    np.save(tmp_path / "images.npy", np.stack(images[:4]))
    rng = np.random.default_rng(1)
    for _ in range(3):  # other sizes and contents first, so buffers hold something else
        libdeflate_png(rng.integers(0, 256, (int(rng.integers(1, 700)), 300, 3), dtype=np.uint8), 1)
    expected = hashlib.sha256()
    for level in LEVELS:
        for image in images[:4]:
            expected.update(libdeflate_png(np.ascontiguousarray(image[::-1][::-1]), level))
    done = subprocess.run(
        [sys.executable, "-c", ENCODE_ALL, str(ROOT), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected.hexdigest()


def _cpu_models_or_skip() -> str:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or os.uname().machine != "x86_64":
        reason = "qemu-x86_64 is not installed (sudo bash scripts/cpu-models.sh install)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return qemu


@pytest.mark.slow
def test_the_same_bytes_on_avx512_avx2_and_sse42_kernels(tmp_path: Path) -> None:
    qemu = _cpu_models_or_skip()
    images = tmp_path / "images.npy"
    np.save(images, np.stack(portrait_spaces()[:4]))
    command = ["-c", ENCODE_ALL, str(ROOT), str(images)]
    here = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    assert here.returncode == 0, here.stderr
    python = sys.executable  # not resolved: the venv's own path, so it finds the venv's packages
    for model in ("Haswell", "Nehalem"):  # AVX2 without AVX-512; SSE4.2 without AVX
        done = subprocess.run(
            [qemu, "-cpu", model, python, *command],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == here.stdout.strip(), model
