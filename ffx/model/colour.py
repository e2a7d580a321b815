"""The colour spaces of `ffx.pipeline.media.color` from a uint8 RGB batch, by torch ops on any device.

`rgb_to_spaces` gives what the host path gives (`color.convert` per image, the spaces stacked),
as uint8, equal on every one of the 2^24 RGB values (tests/model/test_colour_device.py checks all):

- `hsv`, `ycbcr`: OpenCV's 8-bit integer paths (`COLOR_RGB2HSV_FULL`, `COLOR_RGB2YCrCb`) with
  their fixed-point coefficients, division tables and rounding shifts, in int32.
- `lab`: `color.convert` rounds OpenCV's float Lab, which OpenCV computes by trilinear
  interpolation in a 33 x 33 x 33 table of Lab values (fixed point, 2^14 steps) over sRGB in
  [0, 1], at 16 positions between knots. The same interpolation is done here, in int32, on that
  very table, read from the installed OpenCV (its knots are its exact entries). Without OpenCV
  (a machine with torch alone) the table is computed in float64: 89 of its 107 811 entries are
  one step (1/16384 of the range) off OpenCV's, which moves few 8-bit values, by 1 at most.

Everything is integer arithmetic and table look-ups but the final scaling of L*, so autocast and
the device change nothing. This module needs numpy and torch only (OpenCV when installed).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import torch

SPACES = ("rgb", "lab", "hsv", "ycbcr")  # ffx.pipeline.media.color.SPACES (which imports cv2)

# OpenCV's fixed-point BT.601 full-range coefficients (RGB2YCrCb_i), in units of 2^-14.
_YUV_SHIFT = 14
_R2Y, _G2Y, _B2Y, _CR, _CB = 4899, 9617, 1868, 11682, 9241
# OpenCV's HSV division tables (RGB2HSV_b, hsv_shift 12; hue range 256), rounded half to even
# like its saturate_cast; entry 0 is 0, which makes a grey pixel's hue and saturation 0.
_HSV_SHIFT = 12
_LEVELS = np.arange(1, 256, dtype=np.float64)
_SDIV = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / _LEVELS)]).astype(np.int32)
_HDIV = np.concatenate([[0], np.rint((256 << _HSV_SHIFT) / (6 * _LEVELS))]).astype(np.int32)
# OpenCV's Lab interpolation: knots every 1/32 of [0, 1] (33 per axis), 16 steps between knots,
# table values in units of 2^-14 (L* / 100, (a* + 128) / 256, (b* + 128) / 256).
_KNOTS, _STEPS, _LAB_BASE = 33, 16, 1 << 14
_WEIGHT_SHIFT = 12  # the eight weights of a position sum to 16^3 = 2^12


def _lab_table() -> np.ndarray:
    """(33, 33, 33, 3) int32, indexed [R knot, G knot, B knot]: OpenCV's own entries (its float
    Lab at the knots, where the interpolation returns the entry itself), else computed."""
    knots = np.arange(_KNOTS, dtype=np.float32) / np.float32(_KNOTS - 1)
    grid = np.stack(np.meshgrid(knots, knots, knots, indexing="ij"), -1)
    try:
        import cv2
    except ImportError:
        lab = _lab_float64(grid.astype(np.float64))
    else:
        lab = cv2.cvtColor(grid.reshape(1, -1, 3), cv2.COLOR_RGB2Lab).reshape(grid.shape)
        lab = lab.astype(np.float64)
    fixed = np.stack([lab[..., 0] / 100, (lab[..., 1] + 128) / 256, (lab[..., 2] + 128) / 256], -1)
    return np.rint(fixed * _LAB_BASE).astype(np.int32)


def _lab_float64(rgb: np.ndarray) -> np.ndarray:
    """CIELab (D65) of sRGB in [0, 1], float64, with OpenCV's constants."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
    ) / np.array([[0.950456], [1.0], [1.088754]])
    x, y, z = np.moveaxis(linear @ to_xyz.T, -1, 0)
    threshold = 216 / 24389

    def f(t: np.ndarray) -> np.ndarray:
        return np.where(t > threshold, np.cbrt(t), 841 / 108 * t + 16 / 116)

    lightness = np.where(y > threshold, 116 * f(y) - 16, 24389 / 27 * y)
    return np.stack([lightness, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))], -1)


def _lab_positions() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-bit level: its knot and its step (0-15) past it, as OpenCV finds them: the level
    scaled to [0, 1] in float32 (x (1/255), as `color.convert` does), then to 2^14 and rounded."""
    fixed = np.rint(np.arange(256, dtype=np.float32) * np.float32(1 / 255) * np.float32(_LAB_BASE))
    fixed = fixed.astype(np.int64)
    return fixed >> 9, (fixed >> 5) & (_STEPS - 1)


def _lab_rg_sums() -> np.ndarray:
    """(256 x 256 x 34, 3) int32: for each R and G level and each B knot (one past the last
    added, a copy of it), the interpolation's four R-G corner terms summed, entry x R weight x G
    weight (the sums are exact integers, below 2^23): a pixel's Lab is then two look-ups."""
    table = _lab_table()
    table = np.concatenate([table, table[:, :, -1:]], axis=2)  # the B corner past the last knot
    knot, step = _lab_positions()
    sums = np.zeros((256, 256, _KNOTS + 1, 3), np.int64)
    for dr, dg in product((0, 1), repeat=2):
        red = np.minimum(knot + dr, _KNOTS - 1)  # past the last knot: weight 0 (step 0 there)
        green = np.minimum(knot + dg, _KNOTS - 1)
        weight_r = step if dr else _STEPS - step
        weight_g = step if dg else _STEPS - step
        corner = table[red[:, None], green[None, :]]  # (256, 256, 34, 3)
        sums += corner * (weight_r[:, None] * weight_g[None, :])[:, :, None, None]
    return sums.reshape(-1, 3).astype(np.int32)


_tables: dict[tuple[str, torch.device], torch.Tensor] = {}


def _table(name: str, device: torch.device) -> torch.Tensor:
    """A lookup table on `device`, made and copied there once per process (the Lab one: 27 MB)."""
    key = (name, device)
    if key not in _tables:
        if name == "lab":
            source = _lab_rg_sums()
        elif name == "lab_b":  # per B level: the flat offset of its knot, its step
            knot, step = _lab_positions()
            source = np.stack([knot, step], 1)
        else:
            source = {"sdiv": _SDIV, "hdiv": _HDIV}[name]
        _tables[key] = torch.from_numpy(np.ascontiguousarray(source, dtype=np.int32)).to(device)
    return _tables[key]


def parse(spaces: str | Sequence[str]) -> tuple[str, ...]:
    """`rgb,lab` or a sequence -> known space names, in order, without repeats."""
    names = [name.strip().lower() for name in (spaces.split(",") if isinstance(spaces, str) else spaces)]
    names = [name for name in names if name]
    if not names or any(name not in SPACES for name in names) or len(set(names)) != len(names):
        raise ValueError(
            f"colour spaces {','.join(names) or '(none)'}: give some of {','.join(SPACES)}, once each"
        )
    return tuple(names)


def rgb_to_spaces(rgb: torch.Tensor, spaces: str | Sequence[str]) -> torch.Tensor:
    """A uint8 RGB batch (N, 3, H, W) -> uint8 (N, 3·len(spaces), H, W) on `rgb`'s device: each
    space's three channels in the order of `spaces`, as `color.convert` gives them. `rgb` itself
    is returned for `("rgb",)`; normalise the result as the host path's batches."""
    names = parse(spaces)
    if rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected a uint8 (N, 3, H, W) RGB batch, got {rgb.dtype} {tuple(rgb.shape)}")
    if names == ("rgb",):
        return rgb
    planes = [rgb if name == "rgb" else _CONVERSIONS[name](rgb) for name in names]
    return torch.cat(planes, dim=1)


def _ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB2YCrCb_i, the channels as Y, Cb, Cr."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    half = 1 << (_YUV_SHIFT - 1)
    y = (r * _R2Y + g * _G2Y + b * _B2Y + half) >> _YUV_SHIFT
    delta = (128 << _YUV_SHIFT) + half
    cb = ((b - y) * _CB + delta) >> _YUV_SHIFT
    cr = ((r - y) * _CR + delta) >> _YUV_SHIFT
    return torch.stack([y, cb, cr], 1).clamp_(0, 255).to(torch.uint8)


def _hsv(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB2HSV_b with hue range 256 (`COLOR_RGB2HSV_FULL`)."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    diff = value - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    saturation = (diff * _table("sdiv", rgb.device)[value] + half) >> _HSV_SHIFT
    # The channel that is the maximum picks the sector; R wins ties, then G (as in OpenCV).
    hue = torch.where(value == r, g - b, torch.where(value == g, b - r + 2 * diff, r - g + 4 * diff))
    hue = (hue * _table("hdiv", rgb.device)[diff] + half) >> _HSV_SHIFT  # >> floors negatives
    hue = torch.where(hue < 0, hue + 256, hue)
    return torch.stack([hue, saturation, value], 1).to(torch.uint8)


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's interpolated float Lab, scaled to 8 bits and rounded as `color.convert` does."""
    sums, blue = _table("lab", rgb.device), _table("lab_b", rgb.device)
    r, g, b = rgb.to(torch.int32).unbind(1)
    knot, step = blue.index_select(0, b.flatten()).unbind(1)
    row = (r.flatten() * 256 + g.flatten()) * (_KNOTS + 1) + knot
    lower = sums.index_select(0, row) * (_STEPS - step).unsqueeze(1)
    total = lower.add_(sums.index_select(0, row + 1) * step.unsqueeze(1))  # (N·H·W, 3)
    fixed = (total + (1 << (_WEIGHT_SHIFT - 1))) >> _WEIGHT_SHIFT  # units of 2^-14
    # OpenCV's float result, then `color.convert`'s scaling, in float32 as there: L* = v / 2^14
    # x 100 (exact here: 100 / 2^14 = 25 / 2^12), then x 2.55; a* + 128 = v / 64 exactly.
    lightness = (fixed[:, 0].float() * (100 / _LAB_BASE)) * np.float32(255 / 100)
    lab = torch.stack([lightness, fixed[:, 1].float() / 64, fixed[:, 2].float() / 64], 1)
    lab = lab.round_().clamp_(0, 255).to(torch.uint8)
    return lab.view(r.shape[0], r.shape[1], r.shape[2], 3).permute(0, 3, 1, 2)


_CONVERSIONS = {"lab": _lab, "hsv": _hsv, "ycbcr": _ycbcr}
