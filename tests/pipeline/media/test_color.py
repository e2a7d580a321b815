"""Colour conversions against the CIE and ITU-R BT.601 equations written out here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ffx.errors import FfxError
from ffx.pipeline.media.color import SPACES, convert, parse_spaces


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Random colours plus the corners of the RGB cube and a grey ramp."""
    rng = np.random.default_rng(7)
    random = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)
    ramp = np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[:, None], 3, axis=1)
    extra = np.concatenate([corners, ramp])
    extra = np.concatenate([extra, np.zeros((64 - len(extra) % 64, 3), np.uint8)]).reshape(-1, 64, 3)
    return np.concatenate([random, extra])


def reference_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (D65) -> CIE XYZ -> CIELab, scaled to 8 bits as L*255/100, a*+128, b*+128."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
    )
    xyz = linear @ to_xyz.T / np.array([0.950456, 1.0, 1.088754])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness * 255 / 100, a + 128, b + 128], axis=-1)


def reference_hsv_full(rgb: np.ndarray) -> np.ndarray:
    """Hexcone HSV with hue in degrees scaled to 0-256, saturation and value 0-255."""
    c = rgb.astype(np.float64)
    value = c.max(axis=-1)
    chroma = value - c.min(axis=-1)
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-12) * 255, 0)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    safe = np.maximum(chroma, 1e-12)
    hue = np.select(
        [chroma == 0, value == r, value == g],
        [0.0, ((g - b) / safe) % 6, (b - r) / safe + 2],
        (r - g) / safe + 4,
    )
    return np.stack([hue * 60 * 256 / 360, saturation, value], axis=-1)


def reference_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 full range: Y, Cb, Cr."""
    c = rgb.astype(np.float64)
    y = 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]
    return np.stack([y, 128 + 0.564 * (c[..., 2] - y), 128 + 0.713 * (c[..., 0] - y)], axis=-1)


def test_rgb_is_the_image_itself(rgb: np.ndarray) -> None:
    out = convert(rgb, "rgb")
    assert np.array_equal(out, rgb) and out is not rgb


def test_lab_matches_the_cie_equations_within_one_level(rgb: np.ndarray) -> None:
    difference = np.abs(convert(rgb, "lab").astype(np.float64) - reference_lab(rgb))
    assert difference.max() <= 1.0
    assert convert(np.full((1, 1, 3), 255, np.uint8), "lab").tolist() == [[[255, 128, 128]]]  # D65 white


def test_hsv_is_full_range_and_matches_the_hexcone_equations(rgb: np.ndarray) -> None:
    hsv = convert(rgb, "hsv").astype(np.float64)
    reference = reference_hsv_full(rgb)
    hue_gap = np.abs(hsv[..., 0] - reference[..., 0])
    hue_gap = np.minimum(hue_gap, 256 - hue_gap)  # hue wraps around
    assert hue_gap.max() <= 1.0
    assert np.abs(hsv[..., 1:] - reference[..., 1:]).max() <= 1.0
    blue = convert(np.array([[[0, 0, 255]]], np.uint8), "hsv")
    assert blue.tolist() == [[[round(240 * 256 / 360), 255, 255]]]  # not OpenCV's 0-179 hue (120)
    assert hsv[..., 0].max() > 180  # the full byte is used


def test_ycbcr_is_bt601_full_range_in_y_cb_cr_order(rgb: np.ndarray) -> None:
    difference = np.abs(convert(rgb, "ycbcr").astype(np.float64) - reference_ycbcr(rgb))
    assert difference.max() <= 1.0
    blue = convert(np.array([[[0, 0, 255]]], np.uint8), "ycbcr")[0, 0]
    assert blue[1] == 255 and blue[2] < 128  # Cb (blue difference) second, Cr third


@pytest.mark.parametrize("space", SPACES)
def test_every_space_keeps_shape_and_dtype(rgb: np.ndarray, space: str) -> None:
    out = convert(rgb, space)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_bad_input_and_names_are_refused(rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        convert(rgb.astype(np.float32), "lab")
    with pytest.raises(FfxError, match="unknown colour space"):
        convert(rgb, "xyz")
    assert parse_spaces("rgb, YCbCr") == ("rgb", "ycbcr")
    with pytest.raises(FfxError, match="unknown colour space hls"):
        parse_spaces("rgb,hls")
    with pytest.raises(FfxError, match="listed twice"):
        parse_spaces("rgb,rgb")


def test_lab_and_ycbcr_are_the_same_bytes_as_before_they_were_made_faster_on_every_colour() -> None:
    """Lab by cv2.transform and YCbCr by cv2.mixChannels (ffx 0.1's shards were written with these
    expressions): every one of the 2^24 colours gives the same bytes, so shards of the same crops
    keep their bytes."""
    colours = np.arange(1 << 24, dtype=np.uint32)
    image = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], -1).astype(np.uint8)
    image = image.reshape(4096, 4096, 3)
    lab = cv2.cvtColor(image.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)
    scale, offset = np.array([255 / 100, 1, 1], np.float32), np.array([0, 128, 128], np.float32)
    before = np.clip(np.rint(lab * scale + offset), 0, 255).astype(np.uint8)
    assert np.array_equal(convert(image, "lab"), before)
    ycbcr = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., [0, 2, 1]])
    assert np.array_equal(convert(image, "ycbcr"), ycbcr)
