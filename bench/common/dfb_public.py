"""DeepfakeBench's preprocessing (SCLBD/DeepfakeBench `preprocessing/preprocess.py`), written from
its description: the baseline of bench/dfb.py, run in its own process as its users run it:
`python bench/common/dfb_public.py SPEC.json`.

Only the standard library at the top: the process is timed from its start and imports what the
DeepfakeBench script imports for this work (cv2, dlib, numpy), nothing more. As the script does:
- videos go to a thread pool of `os.cpu_count()` workers (SPEC "threads" may change it; 1 runs
  them one after the other); each video makes its own `dlib.get_frontal_face_detector()`;
- every frame of a video is read with `cv2.VideoCapture.read` up to its frame count (the script
  does not stop after the last sampled frame); the sampled ones are
  `np.linspace(0, n - 1, N, dtype=int)` of the frame count n;
- on each sampled frame (BGR -> RGB): the detector with one upsampling, the largest face, the
  shape predictor, five of its points (indices 37, 44, 30, 49, 55, as the script takes them) fitted
  by a least-squares similarity to the ArcFace template shifted 8 px right, scaled to 256 x 256 and
  shrunk for a 1.3 margin, `cv2.warpAffine` to 256 x 256 (the script's `extract_aligned_face_dlib`);
  then the detector (one upsampling) and the predictor again on the aligned crop, whose 68 points are
  what it saves; no face there and the frame is dropped;
- the crop saved as `frames/<video>/<index:03d>.png` (`cv2.imwrite`), the points as
  `landmarks/<video>/<index:03d>.npy`; no masks (the tree has no mask videos).
Differences: the 68-point model of `face-recognition-models` (DeepfakeBench uses an 81-point one,
not available offline; its first 68 points are the same layout) and, since that file is 5x the size
of DeepfakeBench's, it is loaded once per process rather than once per video (the baseline's favour);
the similarity is Umeyama's least squares, as scikit-image's `SimilarityTransform.estimate` fits it.

SPEC's "out" JSON: the start-up inside the process, the seconds of the thread pool, and per video
its wall, decode and model seconds and per sampled frame [index, detect, landmarks, align, crop
detect + landmarks, save seconds, saved].
"""

import json
import os
import sys
import time
from pathlib import Path

SIZE, SCALE = 256, 1.3  # extract_aligned_face_dlib's res and img_align_crop's scale
FIVE = (37, 44, 30, 49, 55)  # the points get_keypts takes: eyes, nose tip, mouth corners
TEMPLATE_112 = (
    (30.2946, 51.6963),
    (65.5318, 51.5014),
    (48.0252, 71.7366),
    (33.5493, 92.3655),
    (62.7299, 92.2041),
)


def template():
    """The five target points in the 256 x 256 crop: the 112-pixel template moved 8 px right,
    scaled to the size, then shrunk towards the origin for the margin (as img_align_crop does)."""
    import numpy as np

    dst = np.array(TEMPLATE_112, np.float64)
    dst[:, 0] += 8.0
    dst *= SIZE / 112
    margin = SIZE * (SCALE - 1) / 2
    return (dst + margin) * (SIZE / (SIZE + 2 * margin))


def similarity(src, dst):
    """The least-squares similarity taking `src` onto `dst` (Umeyama 1991), 2 x 3."""
    import numpy as np

    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    sign = np.array([1.0, -1.0 if np.linalg.det(cov) < 0 else 1.0])
    rotation = u @ np.diag(sign) @ vt
    scale = (s * sign).sum() / src_c.var(axis=0).sum()
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def crop_frame(predictor, detector, bgr, dst) -> tuple:
    """One sampled frame: (aligned BGR crop or None, its 68 points, the seconds of each step)."""
    import cv2
    import numpy as np

    begun = time.perf_counter()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    faces = detector(rgb, 1)
    detected = time.perf_counter()
    if not len(faces):
        return None, None, (detected - begun, 0.0, 0.0, 0.0)
    face = max(faces, key=lambda rect: rect.width() * rect.height())
    shape = predictor(rgb, face)
    five = np.array([(shape.part(i).x, shape.part(i).y) for i in FIVE], np.float64)
    marked = time.perf_counter()
    crop = cv2.warpAffine(rgb, similarity(five, dst), (SIZE, SIZE))
    crop = cv2.cvtColor(cv2.resize(crop, (SIZE, SIZE)), cv2.COLOR_RGB2BGR)
    aligned = time.perf_counter()
    again = detector(crop, 1)  # the script finds the face again in its crop for the saved points
    points = None
    if len(again):
        shape = predictor(crop, again[0])
        points = np.array([(part.x, part.y) for part in shape.parts()], np.int64)
    steps = (detected - begun, marked - detected, aligned - marked, time.perf_counter() - aligned)
    return (crop if points is not None else None), points, steps


def video(predictor, spec: dict, path: str) -> dict:
    """Every frame of one video read, the sampled ones cropped and saved; its timings."""
    import cv2
    import dlib
    import numpy as np

    begun = time.perf_counter()
    detector = dlib.get_frontal_face_detector()  # the script makes one per video
    model = time.perf_counter() - begun
    capture = cv2.VideoCapture(str(Path(spec["root"]) / path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, count - 1, spec["frames"], endpoint=True, dtype=int).tolist())
    dst, stem, out = template(), Path(path).stem, Path(spec["out_dir"])
    rows, decode = [], 0.0
    for index in range(count):
        read_start = time.perf_counter()
        ok, bgr = capture.read()
        decode += time.perf_counter() - read_start
        if not ok:
            break
        if index not in wanted:
            continue
        crop, points, steps = crop_frame(predictor, detector, bgr, dst)
        save_start = time.perf_counter()
        if crop is not None:
            image = out / "frames" / stem / f"{index:03d}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), crop)
            marks = out / "landmarks" / stem / f"{index:03d}.npy"
            marks.parent.mkdir(parents=True, exist_ok=True)
            np.save(str(marks), points)
        rows.append([index, *steps, time.perf_counter() - save_start, crop is not None])
    capture.release()
    return {"seconds": time.perf_counter() - begun, "decode": decode, "model": model, "frames": rows}


def main(spec_path: Path) -> None:
    started = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    # The script's imports, at start-up as there (the workers find them loaded).
    import cv2  # noqa: F401
    import dlib
    import numpy  # noqa: F401

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    loaded = time.perf_counter()
    predictor = dlib.shape_predictor(spec["model"])
    report = {
        "predictor_seconds": time.perf_counter() - loaded,
        "startup_inside": time.perf_counter() - started,
    }
    threads = spec.get("threads") or os.cpu_count()
    pool_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {path: pool.submit(video, predictor, spec, path) for path in spec["videos"]}
        report["videos"] = {path: future.result() for path, future in futures.items()}
    report |= {"threads": threads, "pool_seconds": time.perf_counter() - pool_start}
    Path(spec["out"]).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
