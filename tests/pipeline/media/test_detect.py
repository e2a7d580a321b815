"""Detection without torchvision's package: the same NMS keep indices as torchvision and the same
MTCNN outputs, byte for byte, with torch._dynamo never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ffx.pipeline.media import detect
from tests.conftest import REPO


def random_boxes(generator: torch.Generator, count: int, integer: bool) -> torch.Tensor:
    """Boxes in a small field so many overlap; integer corners make exact IoU ties and duplicates."""
    corners = torch.rand(count, 2, generator=generator) * 60
    sides = torch.rand(count, 2, generator=generator) * 30 + 1
    boxes = torch.cat([corners, corners + sides], 1)
    return boxes.round() if integer else boxes


def test_batched_nms_keeps_what_torchvision_keeps() -> None:
    if not detect._load_nms_kernel():
        pytest.skip("this torchvision's batched_nms is not the one detect._batched_nms copies")
    from torchvision.ops import batched_nms

    generator = torch.Generator().manual_seed(0)
    branches = set()
    for trial in range(400):
        count = int(torch.randint(0, 1600, (1,), generator=generator)) if trial % 4 else int(trial % 7)
        boxes = random_boxes(generator, count, integer=trial % 2 == 0)
        if trial % 3 == 0:  # ties: scores from a few values, some boxes repeated exactly
            scores = torch.randint(0, 4, (count,), generator=generator).float() / 4
            if count > 1:
                boxes[count // 2 :] = boxes[: count - count // 2].clone()
        else:
            scores = torch.rand(count, generator=generator)
        classes = torch.randint(0, 1 + trial % 5, (count,), generator=generator)
        threshold = (0.5, 0.7, 0.3)[trial % 3]
        ours = detect._batched_nms(boxes, scores, classes, threshold)
        theirs = batched_nms(boxes, scores, classes, threshold)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), trial
        branches.add(boxes.numel() > 4000)
    assert branches == {False, True}  # both of torchvision's code paths were compared


DETECT_DEMO_CLIPS = """
import hashlib, json, sys
import numpy as np, torch
if sys.argv[1] == "usual":
    import torchvision  # facenet-pytorch then imports the real package, as before
torch.set_num_threads(1)
from ffx.pipeline.media.detect import DetectorSettings, FaceDetector
from ffx.synthetic import portrait_frames

detector = FaceDetector(DetectorSettings(640, 0.5), "cpu", batch_size=4)
digest, faces = hashlib.sha256(), 0
for number, fake in enumerate((False, True, False)):
    frames = list(portrait_frames(9, phase=number * 0.9, fake=fake, width=256, height=320, seed=number))
    for found in detector.detect_video(frames):
        for face in found:
            digest.update(face.box.tobytes() + np.float64(face.prob).tobytes() + face.landmarks.tobytes())
            faces += 1
print(json.dumps({"sha256": digest.hexdigest(), "faces": faces,
                  "dynamo": "torch._dynamo" in sys.modules, "torchvision": "torchvision" in sys.modules}))
"""


def test_detection_is_byte_identical_without_torchvision_package() -> None:
    if not detect._load_nms_kernel():
        pytest.skip("this torchvision's batched_nms is not the one detect._batched_nms copies")
    results = {}
    for way in ("usual", "lean"):
        run = subprocess.run(
            [sys.executable, "-c", DETECT_DEMO_CLIPS, way],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results[way] = json.loads(run.stdout.splitlines()[-1])
    assert results["usual"]["faces"] == 27  # one face in every frame of the 3 clips
    assert results["usual"]["sha256"] == results["lean"]["sha256"]
    assert results["usual"]["dynamo"] and results["usual"]["torchvision"]
    assert not results["lean"]["dynamo"] and not results["lean"]["torchvision"]


def test_torchvision_imports_normally_after_the_stand_ins() -> None:
    """The stand-ins leave no trace: a later `import torchvision` in the process is the real one."""
    code = (
        "import sys; from ffx.pipeline.media.detect import import_mtcnn; import_mtcnn()\n"
        "assert 'torchvision' not in sys.modules\n"
        "import torchvision, torchvision.ops; from facenet_pytorch.models.utils import detect_face\n"
        "assert torchvision.ops.batched_nms.__module__ == 'torchvision.ops.boxes'\n"
        "from PIL import Image; import numpy as np\n"
        "image = Image.fromarray(np.zeros((40, 40, 3), np.uint8))\n"
        "face = detect_face.extract_face(image, [5, 5, 30, 30], 16, 0)\n"
        "print(tuple(face.shape))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "(3, 16, 16)"  # extract_face's F.to_tensor reached the real torchvision
