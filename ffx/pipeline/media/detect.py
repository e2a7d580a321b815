"""Batched MTCNN face detection (facenet-pytorch) on downscaled copies, boxes in full resolution.

Two measured levers (bench/crop.py): detection runs on a copy whose long side is at most
`max_side`, and, after the first frame of a video, MTCNN's smallest face is raised towards
`min_face_ratio` of the largest face found there. That drops the largest levels of MTCNN's image
pyramid, where most of its time goes. The smallest face is only raised in whole pyramid steps
(20 / 0.709**k), so the levels that remain are exactly levels of the full pyramid and faces above
the new limit get the same boxes as with the default setting.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import math
import sys
import types
from collections.abc import Callable
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

        mtcnn_class = import_mtcnn()
        self.settings = settings
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.mtcnn = mtcnn_class(keep_all=True, device=self.device, thresholds=list(settings.thresholds))
        # Channels-last weights make the convolutions emit channels-last maps, for which PyTorch's
        # CPU max-pooling is vectorised: PNet ran 1.7x faster on 640x360 batches, same outputs.
        for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
            net.to(memory_format=torch.channels_last)
        self.frames_detected = 0

    def detect_video(
        self, frames: list[np.ndarray], progress: Callable[[int], None] | None = None
    ) -> list[list[Detection]]:
        """Every face MTCNN finds in each frame (all the same size), in full-resolution pixels;
        `progress` hears the count of frames detected after each batch (a worker's sign of life)."""
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
            if progress is not None:
                progress(len(found))
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


# torchvision versions whose `ops.batched_nms` `_batched_nms` below copies line for line (the
# branch thresholds differ between releases): others import facenet-pytorch the usual way.
TORCHVISION_NMS_VERSIONS = ("0.29.",)


def import_mtcnn() -> type:
    """facenet-pytorch's MTCNN class, imported without running torchvision's package `__init__`
    where that is safe.

    facenet-pytorch's detect_face module imports `torchvision.ops.boxes.batched_nms` and
    `torchvision.transforms.functional`; either import runs torchvision's `__init__`, which loads
    torchvision.models and torchvision.ops, whose roi_align imports `torch._dynamo` (3-4 s of a
    detection worker's start, measured with `python -X importtime`). Detection only needs the
    NMS kernel, which lives in torchvision's compiled extension: it is loaded on its own with
    `torch.ops.load_library`, and while facenet-pytorch is imported, stand-in `torchvision`
    modules give it `_batched_nms` (the same code on the same kernel, so the same keep indices)
    and a `functional` that imports the real torchvision on first use (only `extract_face`
    uses it). The stand-ins are removed right after, so a later `import torchvision` in the
    process gets the real package. Where torchvision is imported already, its version is not one
    `_batched_nms` copies, or its extension is not found, facenet-pytorch is imported as usual."""
    if (
        "facenet_pytorch.models.mtcnn" in sys.modules
        or "torchvision" in sys.modules
        or not _load_nms_kernel()
    ):
        from facenet_pytorch import MTCNN

        return MTCNN
    stand_ins = _torchvision_stand_ins()
    sys.modules.update(stand_ins)
    try:
        from facenet_pytorch import MTCNN
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return MTCNN


def _load_nms_kernel() -> bool:
    """Load torchvision's compiled ops (`torch.ops.torchvision.nms`) without importing the
    package, as torchvision's extension.py does; False where that is not possible or not safe."""
    try:
        version = importlib.metadata.version("torchvision")
        spec = importlib.util.find_spec("torchvision")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    if not version.startswith(TORCHVISION_NMS_VERSIONS) or spec is None or sys.platform == "win32":
        return False
    import torch

    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for folder in spec.submodule_search_locations or ():
        extension = importlib.machinery.FileFinder(folder, loader).find_spec("_C_stable")
        if extension is not None and extension.origin:
            try:
                torch.ops.load_library(extension.origin)
            except OSError:
                return False
            return hasattr(torch.ops.torchvision, "nms")
    return False


def _batched_nms(boxes, scores, idxs, iou_threshold: float):
    """torchvision 0.29's `torchvision.ops.batched_nms`, on the same kernel: per-class NMS, by
    class offsets for small inputs and one NMS per class for large ones, keep indices sorted by
    decreasing score."""
    import torch

    if (
        boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000)
        and not torch._C._get_tracing_state()
    ):
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            current = torch.where(idxs == class_id)[0]
            current_keep = torch.ops.torchvision.nms(boxes[current], scores[current], iou_threshold)
            keep_mask[current[current_keep]] = True
        keep = torch.where(keep_mask)[0]
        return keep[scores[keep].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return torch.ops.torchvision.nms(boxes + offsets[:, None], scores, iou_threshold)


class _RealTorchvisionFunctional(types.ModuleType):
    """`torchvision.transforms.functional`, imported (with all of torchvision) on first use."""

    def __getattr__(self, name: str):
        import torchvision.transforms.functional

        return getattr(torchvision.transforms.functional, name)


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    """The modules facenet-pytorch's imports reach, holding just what it takes from them."""
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = _RealTorchvisionFunctional("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    package.__path__, transforms.__path__, ops.__path__ = [], [], []  # packages: submodules allowed
    package.transforms, package.ops = transforms, ops
    transforms.functional, ops.boxes = functional, boxes
    boxes.batched_nms = _batched_nms
    return {module.__name__: module for module in (package, transforms, functional, ops, boxes)}


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
