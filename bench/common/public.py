"""The public MCX-API way of cropping faces, the baseline of bench/crop.py and bench/pipeline.py,
run in its own process as its users run it: `python bench/common/public.py SPEC.json`.

Only the standard library at the top: the process is timed from its start and imports what the
public code imports, nothing more. One frame at a time at full resolution: a video's frames read
with `cv2.VideoCapture.read` and BGR -> RGB ("videos"), or PNG frames read with
`Image.open(png).convert("RGB")` ("pngs"); then `MTCNN(image_size=512, margin=120)`'s forward pass
(detect, select the largest, extract and save the crop: the same calls, step by step, so that the
box is kept); a face kept above probability 0.99. With "spaces", each kept crop is read back with
cv2 and written in each colour space (cv2.cvtColor, cv2.imwrite), the images the public model
reads. Per video, each frame's [index, crop seconds, crop + colour seconds, prob, kept, box] go to
SPEC's "out" JSON with the start-up (imports, building MTCNN, one warm-up call with "warmup").
"""

import json
import sys
import time
from pathlib import Path

PUBLIC_MIN_PROB = 0.99  # the public code keeps a face above this probability
PUBLIC_SIZE, PUBLIC_MARGIN = 512, 120
SPACES = (("lab", 44), ("hsv", 40), ("ycrcb", 36))  # cv2.COLOR_RGB2Lab, RGB2HSV, RGB2YCrCb


def readers(spec: dict, video: str) -> list:
    """Per frame, a function that reads it as a PIL RGB image (None past a video's end)."""
    import cv2
    from PIL import Image

    if spec["mode"] == "pngs":
        paths = [Path(spec["root"]) / png for png in spec["videos"][video]]
        return [lambda path=path: Image.open(path).convert("RGB") for path in paths]
    capture = cv2.VideoCapture(str(Path(spec["root"]) / video))

    def read():
        ok, bgr = capture.read()
        return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if ok else None

    return [read] * spec["frames"]


def main(spec_path: Path) -> None:
    started = time.perf_counter()
    import cv2
    import torch
    from facenet_pytorch import MTCNN

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    mtcnn = MTCNN(image_size=PUBLIC_SIZE, margin=PUBLIC_MARGIN, device="cpu")
    out_dir = Path(spec["crops"])
    if spec.get("warmup"):  # torch's lazy set-up on the first frame: start-up, paid once a run
        mtcnn(readers(spec, next(iter(spec["videos"])))[0](), save_path=str(out_dir / "warmup.png"))
    report = {"torch_threads": torch.get_num_threads(), "startup_inside": time.perf_counter() - started}
    report["videos"] = {}
    for video in spec["videos"]:
        rows, begun = [], time.perf_counter()
        for index, read in enumerate(readers(spec, video)):
            frame_start = time.perf_counter()
            img = read()
            if img is None:
                break
            save = out_dir / video.replace("/", "_") / f"{index:04d}.png"
            save.parent.mkdir(parents=True, exist_ok=True)
            boxes, probs, points = mtcnn.detect(img, landmarks=True)
            boxes, probs, points = mtcnn.select_boxes(
                boxes, probs, points, img, method=mtcnn.selection_method
            )
            mtcnn.extract(img, boxes, str(save))
            prob = None if probs is None else float(probs)  # one image: one box (1 x 4) and its prob
            kept = prob is not None and prob > PUBLIC_MIN_PROB
            crop_end = time.perf_counter()
            if kept and spec.get("spaces"):
                rgb = cv2.cvtColor(cv2.imread(str(save)), cv2.COLOR_BGR2RGB)
                for space, code in SPACES:
                    cv2.imwrite(str(save.with_name(f"{save.stem}.{space}.png")), cv2.cvtColor(rgb, code))
            box = None if boxes is None else [float(value) for value in boxes[0]]
            rows.append([index, crop_end - frame_start, time.perf_counter() - frame_start, prob, kept, box])
        report["videos"][video] = {"seconds": time.perf_counter() - begun, "frames": rows}
    Path(spec["out"]).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))


def run_public(name: str, spec: dict, work: Path, own: int = 2):
    """This worker in a fresh Python over `spec` ("mode", "root", "videos", "frames" ...), timed
    whole as a user runs it (common.harness.process); items: kept faces; the stage's own time:
    the frames' seconds (row column `own`: 1 crops, 2 crops + colour), the rest is start-up."""
    from common.harness import process

    work.mkdir(parents=True)
    spec = spec | {"crops": str(work / "crops"), "out": str(work / "public.json")}
    (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    timing = process(name, [sys.executable, __file__, str(work / "spec.json")])
    report = json.loads((work / "public.json").read_text(encoding="utf-8"))
    rows = [row for video in report["videos"].values() for row in video["frames"]]
    timing.items, timing.unit = sum(row[4] for row in rows), "faces"
    timing.startup_seconds = max(0.0, timing.seconds - sum(row[own] for row in rows))
    timing.extra |= {"per_video": report.pop("videos"), **report}
    return timing


def main_boxes(build: Path) -> dict[tuple[str, int], tuple]:
    """ffx's main-face box per (video key, frame index) of a build (faces.parquet: status ok, track 0)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(build / "faces.parquet").to_pylist()
    ok = (row for row in rows if row["status"] == "ok" and row["track"] == 0)
    return {(row["key"], row["frame_index"]): (row["x1"], row["y1"], row["x2"], row["y2"]) for row in ok}


def public_boxes(timing, frame_index=lambda video, index: index) -> dict[tuple[str, int], list]:
    """The public run's box per (video, frame index) where it kept a face (`frame_index` maps a
    row's place in its video to the frame's index)."""
    videos = timing.extra["per_video"].items()
    return {(v, frame_index(v, row[0])): row[5] for v, data in videos for row in data["frames"] if row[4]}


def box_agreement(mine: dict, reference: dict) -> dict:
    """IoU of ffx's main-face boxes against the public boxes on the frames where both found a face."""
    import numpy as np

    from ffx.pipeline.media.faces import box_iou

    both = sorted(set(mine) & set(reference))
    overlaps = np.array([box_iou(mine[key], reference[key]) for key in both])
    found = {"frames_ffx": len(mine), "frames_public": len(reference), "frames_both": len(both)}
    return found | {
        "median_iou": float(np.median(overlaps)) if len(both) else None,
        "p10_iou": float(np.percentile(overlaps, 10)) if len(both) else None,
        "min_iou": float(overlaps.min()) if len(both) else None,
        "frames_below_0.5": int((overlaps < 0.5).sum()),
        "low_iou_frames": [[*key, round(float(iou), 3)] for key, iou in zip(both, overlaps) if iou < 0.5],
    }
