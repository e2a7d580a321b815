"""Dense face landmarks (a dlib shape predictor on the MTCNN box), convex-hull masks, aligned crops.

Coordinates are pixel indices (a pixel's centre is a whole number), the convention of dlib, of
OpenCV's `warpAffine` and of the ArcFace template. Landmarks are found on the full-resolution frame
and stored there (`faces.parquet` column `dense_landmarks`); `crop_points` maps them into a crop.

dlib and the 68-point model are the optional `landmarks` extra (`dlib-bin`, whose wheel needs no
compiler, and `face-recognition-models`, which ships `shape_predictor_68_face_landmarks.dat`).
This module imports neither until a predictor is made, so crops without landmarks never need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ffx.errors import InputError

NONE, DLIB68 = "none", "dlib68"
INSTALL_HINT = "pip install 'ffx[landmarks]' (dlib-bin and face-recognition-models)"
MODEL_68 = "shape_predictor_68_face_landmarks.dat"

# ArcFace's 112x112 template (insightface `arcface_dst`): left eye, right eye, nose tip, left and
# right mouth corners, in pixel indices. The `aligned` preset scales it by size / 112.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def model_file(landmarks: str) -> Path:
    """The dlib shape model a `crop.landmarks` value names ("dlib68": the packaged one; otherwise
    a file), checked to exist and dlib to import: an InputError saying what to install if not."""
    if importlib.util.find_spec("dlib") is None:
        raise InputError(f"crop.landmarks = {landmarks!r} needs dlib: {INSTALL_HINT}")
    if landmarks == DLIB68:
        # The package's __init__ imports pkg_resources (gone from recent setuptools): locate its
        # folder without running it.
        spec = importlib.util.find_spec("face_recognition_models")
        folders = list(spec.submodule_search_locations or []) if spec else []
        for folder in folders:
            if (Path(folder) / "models" / MODEL_68).is_file():
                return Path(folder) / "models" / MODEL_68
        raise InputError(f"crop.landmarks = 'dlib68' needs {MODEL_68}: {INSTALL_HINT}")
    path = Path(landmarks)
    if not path.is_file():
        raise InputError(
            f"{path}: dlib shape model not found (crop.landmarks / --landmarks-model takes a .dat file, "
            "e.g. shape_predictor_81_face_landmarks.dat)"
        )
    return path.resolve()


def model_sha256(path: str) -> str:
    """sha256 of a user's model file, so replacing the file redoes the crops (cached per size and
    modification time: plans ask once per video)."""
    stat = Path(path).stat()
    return _file_sha256(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _file_sha256(path: str, _size: int, _mtime_ns: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            hasher.update(chunk)
    return hasher.hexdigest()


def dlib_rectangle(box) -> tuple[int, int, int, int]:
    """The MTCNN box (x2, y2 exclusive, fractional) as dlib's rectangle (left, top, right, bottom;
    right and bottom inclusive), rounded to whole pixels."""
    x1, y1, x2, y2 = (float(value) for value in box)
    return round(x1), round(y1), round(x2) - 1, round(y2) - 1


class LandmarkPredictor:
    """A dlib shape predictor: `predict(rgb, box)` gives the (N, 2) points of the face in `box`."""

    def __init__(self, path: str):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))

    def predict(self, rgb: np.ndarray, box) -> np.ndarray:
        shape = self._predictor(np.ascontiguousarray(rgb), self._dlib.rectangle(*dlib_rectangle(box)))
        return np.array([(point.x, point.y) for point in shape.parts()], np.float32)


def box_matrix(cut, size: int) -> np.ndarray:
    """The 2x3 map from frame pixels to crop pixels of a box preset: the box `cut` (x2, y2
    exclusive) resized to size x size, each axis on its own (pixel centres stay centres)."""
    x1, y1, x2, y2 = cut
    scale_x, scale_y = size / (x2 - x1), size / (y2 - y1)
    return np.array(
        [[scale_x, 0, (0.5 - x1) * scale_x - 0.5], [0, scale_y, (0.5 - y1) * scale_y - 0.5]], np.float64
    )


def crop_points(points, cut, size: int, matrix=None) -> np.ndarray:
    """Frame-pixel points in a crop's pixels: through `matrix` (an aligned crop's `crop_matrix`,
    6 values) when given, else the box preset's map of `cut` (crop_x1, crop_y1, crop_x2, crop_y2)."""
    transform = np.asarray(matrix, np.float64).reshape(2, 3) if matrix is not None else box_matrix(cut, size)
    xy = np.asarray(points, np.float64).reshape(-1, 2)
    return xy @ transform[:, :2].T + transform[:, 2]


def face_crop_landmarks(row: dict, size: int) -> np.ndarray | None:
    """A faces.parquet row's dense landmarks in its crop's pixels ((N, 2) float64; `size` is the
    recipe's `crop.size`), or None when the row has none."""
    if not row.get("dense_landmarks"):  # null, or empty in a table written before the column
        return None
    cut = (row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"])
    return crop_points(row["dense_landmarks"], cut, size, row.get("crop_matrix") or None)


def similarity(source, target) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) taking `source` points
    onto `target` (Umeyama 1991, as skimage's SimilarityTransform and insightface estimate it), 2x3."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(covariance) < 0:  # a reflection fits better: take the best proper rotation
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    variance = source_centred.var(axis=0).sum()
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def aligned_matrix(five_points, size: int) -> np.ndarray:
    """The `aligned` preset's 2x3 map from frame pixels to crop pixels: MTCNN's five points onto
    ArcFace's 112x112 template scaled to size x size."""
    return similarity(np.asarray(five_points).reshape(5, 2), ARCFACE_112 * (size / 112))


def aligned_crop(rgb: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The size x size aligned crop (bilinear, black outside the frame) and the frame box it draws
    from: the bounds of the crop's corners mapped back to the frame, clipped (x2, y2 exclusive)."""
    crop = cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    frame = corners @ inverse[:, :2].T + inverse[:, 2] + 0.5  # pixel edges in frame pixels
    height, width = rgb.shape[:2]
    low = np.clip(np.floor(frame.min(axis=0)), 0, (width, height)).astype(int)
    high = np.clip(np.ceil(frame.max(axis=0)), 0, (width, height)).astype(int)
    return crop, (int(low[0]), int(low[1]), int(high[0]), int(high[1]))


def hull_mask(points, size: int) -> np.ndarray:
    """The filled convex hull of crop-pixel points as a size x size uint8 mask (255 inside), as SBI
    and Face X-ray draw it; parts of the hull outside the crop are cut off."""
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 1, 2))
    cv2.fillConvexPoly(mask, hull, 255)
    return mask
