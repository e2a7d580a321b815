"""Batched MTCNN face detection (facenet-pytorch) on downscaled copies, boxes in full resolution.

Two measured levers (bench/crop.py): detection runs on a copy whose long side is at most
`max_side`, and, after the first frame of a video, MTCNN's smallest face is raised towards
`min_face_ratio` of the largest face found there. That drops the largest levels of MTCNN's image
pyramid, where most of its time goes. The smallest face is only raised in whole pyramid steps
(20 / 0.709**k), so the levels that remain are exactly levels of the full pyramid and faces above
the new limit get the same boxes as with the default setting.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffx.errors import FfxError
from ffx.pipeline.media.faces import Detection

MTCNN_MIN_FACE = 20  # facenet-pytorch's default smallest face, in detection pixels


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; `cuda` without a GPU is an error."""
    if device == "cpu" or (device == "auto" and not _gpu_driver_loaded()):
        return "cpu"  # without importing torch, which costs the main process seconds
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FfxError("--device cuda asked for, but PyTorch sees no GPU (use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise FfxError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def _gpu_driver_loaded() -> bool:
    """False only where a GPU surely is not usable: Linux without NVIDIA's or ROCm's device nodes."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/kfd"))


@dataclass
class DetectorSettings:
    """How faces are searched for; recorded with the crops so a build never mixes settings."""

    max_side: int  # the recipe's crop.detect_max_side
    min_face_ratio: float  # the recipe's crop.min_face_ratio
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults


class FaceDetector:
    """MTCNN with its bundled weights (nothing is downloaded) on the chosen device."""

    def __init__(self, settings: DetectorSettings, device: str = "auto", batch_size: int = 8):
        import torch
        from facenet_pytorch import MTCNN

        self.settings = settings
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.mtcnn = MTCNN(keep_all=True, device=self.device, thresholds=list(settings.thresholds))
        # Channels-last weights make the convolutions emit channels-last maps, for which PyTorch's
        # CPU max-pooling is vectorised: PNet ran 1.7x faster on 640x360 batches, same outputs.
        for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
            net.to(memory_format=torch.channels_last)
        self.frames_detected = 0

    def detect_video(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Every face MTCNN finds in each frame (all the same size), in full-resolution pixels."""
        if not frames:
            return []
        height, width = frames[0].shape[:2]
        scale = min(1.0, self.settings.max_side / max(height, width))
        small = [_downscale(frame, scale) for frame in frames]
        smallest_side = min(small[0].shape[:2])
        if smallest_side < MTCNN_MIN_FACE:  # MTCNN's pyramid would be empty: no face fits
            return [[] for _ in frames]
        found = self._detect(small[:1], MTCNN_MIN_FACE)
        min_face = MTCNN_MIN_FACE
        if found[0] and self.settings.min_face_ratio > 0:
            largest = max(min(d.box[2] - d.box[0], d.box[3] - d.box[1]) for d in found[0])
            wanted = min(largest * self.settings.min_face_ratio, smallest_side)
            min_face = pyramid_min_face(wanted, self.mtcnn.factor)
        for start in range(1, len(small), self.batch_size):
            found += self._detect(small[start : start + self.batch_size], min_face)
        return [[_rescale(detection, scale) for detection in detections] for detections in found]

    def _detect(self, batch: list[np.ndarray], min_face: float) -> list[list[Detection]]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        with torch.no_grad():
            boxes, points = detect_face(
                np.stack(batch),
                min_face,
                self.mtcnn.pnet,
                self.mtcnn.rnet,
                self.mtcnn.onet,
                list(self.settings.thresholds),
                self.mtcnn.factor,
                self.device,
            )
        self.frames_detected += len(batch)
        return [
            [
                Detection(np.asarray(box[:4], np.float64), float(box[4]), np.asarray(point, np.float64))
                for box, point in zip(frame_boxes, frame_points)
            ]
            for frame_boxes, frame_points in zip(boxes, points)
        ]


def pyramid_min_face(wanted: float, factor: float) -> float:
    """The largest smallest-face setting MTCNN_MIN_FACE / factor**k that is at most `wanted`."""
    steps = max(0, math.floor(math.log(max(wanted, MTCNN_MIN_FACE) / MTCNN_MIN_FACE) / -math.log(factor)))
    return MTCNN_MIN_FACE / factor**steps


def _downscale(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return frame
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _rescale(detection: Detection, scale: float) -> Detection:
    return Detection(detection.box / scale, detection.prob, detection.landmarks / scale)
