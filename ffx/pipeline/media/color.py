"""The colour spaces of MCX-API's input, as 8-bit images computed from true RGB.

Conventions (fixed; `ffx shard` writes them into every build):

- `rgb`: the crop as decoded, channels R, G, B.
- `lab`: CIELab of sRGB under D65 in OpenCV's 8-bit scaling, L* x 255/100, a* + 128, b* + 128,
  computed in floating point and rounded: OpenCV's own 8-bit path is off by up to 2.5 levels.
- `hsv`: full-range 8-bit HSV: H = hue in degrees x 256/360 (0-255, wrapping), S and V 0-255.
  OpenCV's default 8-bit HSV (H = degrees / 2, 0-179, what the public MCX-API code uses) leaves
  a quarter of the byte unused.
- `ycbcr`: ITU-R BT.601 full range (JPEG): Y = 0.299 R + 0.587 G + 0.114 B,
  Cb = 128 + 0.564 (B - Y), Cr = 128 + 0.713 (R - Y), channels in the order Y, Cb, Cr
  (OpenCV returns Y, Cr, Cb).
"""

from __future__ import annotations

import cv2
import numpy as np

from ffx.errors import FfxError

SPACES = ("rgb", "lab", "hsv", "ycbcr")

_YCRCB_TO_YCBCR = [0, 0, 1, 2, 2, 1]  # cv2.mixChannels pairs: Y, then Cr and Cb swapped
# L* x 255/100, a* + 128, b* + 128 as one cv2.transform: each output is one float32 product or sum
# (the zeros add nothing), the very values of `lab * [255/100, 1, 1] + [0, 128, 128]` in numpy,
# without numpy's slow broadcast over a last axis of 3.
_LAB_TO_BYTES = np.array([[255 / 100, 0, 0, 0], [0, 1, 0, 128], [0, 0, 1, 128]], np.float32)


def convert(rgb: np.ndarray, space: str) -> np.ndarray:
    """An H x W x 3 uint8 RGB image in `space`, H x W x 3 uint8 (a new array)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if space == "rgb":
        return rgb.copy()
    if space == "lab":
        # The same float32 operations as `np.clip(np.rint(lab * scale + offset), 0, 255)` on
        # `rgb / 255` (equal on all 2^24 colours, tests/pipeline/media/test_color.py), 6.3 -> 5.1 ms
        # a 512-px crop: Lab is most of a four-space sample's conversions.
        unit = rgb.astype(np.float32)
        unit *= np.float32(1 / 255)
        lab = cv2.transform(cv2.cvtColor(unit, cv2.COLOR_RGB2Lab), _LAB_TO_BYTES)
        np.rint(lab, out=lab)
        return np.clip(lab, 0, 255, out=lab).astype(np.uint8)
    if space == "hsv":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)
    if space == "ycbcr":
        ycbcr = np.empty_like(rgb)
        cv2.mixChannels([cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)], [ycbcr], _YCRCB_TO_YCBCR)
        return ycbcr
    raise FfxError(f"unknown colour space {space!r}; choose from {', '.join(SPACES)}")


def parse_spaces(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`rgb,ycbcr` -> ("rgb", "ycbcr"): known names, no repeats, in the order given."""
    names = [name.strip().lower() for name in (text.split(",") if isinstance(text, str) else text)]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in SPACES]
    if unknown or not names:
        given = ",".join(unknown) or "(none)"
        raise FfxError(f"unknown colour space {given}; choose from {','.join(SPACES)}")
    if len(set(names)) != len(names):
        raise FfxError(f"colour space listed twice in {','.join(names)}")
    return tuple(names)
