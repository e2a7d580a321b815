"""`png_encoder = "isal"` (ffx/pipeline/media/png.py): PNGs that every reader decodes to the very
pixels written, the same bytes on every CPU model (checked under qemu's Haswell and Nehalem, with
this machine's own kernels), and a recipe that refuses a level ISA-L lacks."""

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

from ffx.errors import FfxError
from ffx.pipeline.media.color import convert
from ffx.pipeline.media.images import encode_png
from ffx.pipeline.media.png import isal_png
from ffx.pipeline.recipe.manifest import load_manifest, manifest_changes
from tests.conftest import REPO as ROOT

PORTRAIT = ROOT / "ffx" / "assets" / "portrait.jpg"
# Encodes the images of an .npy file with isal_png at levels 0-2 and prints one sha256 of them all;
# it imports numpy, isal and ffx's png module only, so it starts in seconds under qemu.
ENCODE_ALL = (
    "import hashlib, sys; import numpy as np; sys.path.insert(0, sys.argv[1]); "
    "from ffx.pipeline.media.png import isal_png; "
    "images = np.load(sys.argv[2]); h = hashlib.sha256(); "
    "[h.update(isal_png(image, level)) for level in range(3) for image in images]; print(h.hexdigest())"
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
    for level in range(3):
        data = encode_png(pixels, level, "isal")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)  # PIL checks the CRCs
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(decoded[..., ::-1] if pixels.ndim == 3 else decoded, pixels)


def test_a_crop_decodes_as_the_opencv_encoders_png_does() -> None:
    for image in portrait_spaces(512):
        isal, opencv = encode_png(image, 1, "isal"), encode_png(image, 1, "opencv")
        assert np.array_equal(
            cv2.imdecode(np.frombuffer(isal, np.uint8), cv2.IMREAD_UNCHANGED),
            cv2.imdecode(np.frombuffer(opencv, np.uint8), cv2.IMREAD_UNCHANGED),
        )


def test_a_level_or_an_image_isal_cannot_write_is_refused() -> None:
    with pytest.raises(ValueError, match="levels 0-2, got 3"):
        isal_png(np.zeros((2, 2, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="uint16"):
        isal_png(np.zeros((2, 2, 3), np.uint16), 1)
    with pytest.raises(FfxError, match=r"shard\.png_level 6 is above 2"):
        load_manifest("ffpp-c23", assignments=['png_encoder="isal"', "shard.png_level=6"])
    assert load_manifest("ffpp-c23", assignments=["shard.png_level=6"])  # opencv: 0-9


def test_every_bundled_recipe_encodes_with_opencv_and_an_isal_build_is_told_how_to_keep_its_own() -> None:
    """isal is asked for, never the bundled default: a CI run once wrote other bytes with it for the
    same pixels (one PNG in 720), where opencv's bytes have always been reproducible."""
    from ffx.pipeline.recipe.manifest import recipe_names

    assert {load_manifest(name).png_encoder for name in recipe_names()} == {"opencv"}
    faster = load_manifest("ffpp-c23", assignments=['png_encoder="isal"'])
    assert [change[0] for change in manifest_changes(faster, load_manifest("ffpp-c23"))] == ["png_encoder"]


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
    expected = hashlib.sha256()
    for level in range(3):
        for image in np.load(images):
            expected.update(encode_png(image, level, "isal"))
    assert here.stdout.strip() == expected.hexdigest()
    python = sys.executable  # not resolved: the venv's own path, so it finds the venv's packages
    for model in ("Haswell", "Nehalem"):  # AVX2 without AVX-512; SSE4.2 without AVX
        done = subprocess.run(
            [qemu, "-cpu", model, python, *command],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == expected.hexdigest(), model
