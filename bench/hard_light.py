"""Hard light: on how many frames the subject is the main face, by `crop.track_min_prob`.

Development cases of 30 frames: the generated dusk clip (`ffx.synthetic.dusk_frames`: the subject
dark on 17 frames, a bright face on a TV screen behind), and the two real portrait clips put
through a synthetic light drop (the gain falls 25 % a frame from frame 8 to 0.12, noise added), a
head tilt (the frame turns 4 degrees a frame about the face from frame 8, to 40), both at once, and
a light drop with a smaller, bright passer-by crossing the top of the frame on frames 8-22. The
subject's box on each frame is set from the clear clip (its largest confident face, its centre
turned with the frame): a frame counts when the main face's box holds that centre at a size within
2x. The clear real clips (the four media clips) must keep today's main face exactly: the same
frames, the same boxes.

    .venv/bin/python bench/hard_light.py
"""

from __future__ import annotations

import cv2
import numpy as np
from common import media_videos, read_video
from common.harness import Bench, Column, print_table

from ffx.pipeline.media.detect import DetectorSettings, FaceDetector
from ffx.pipeline.media.faces import select_faces
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.synthetic import dusk_frames, portrait_frames

BENCH = Bench("hard_light", __doc__, workdir=False)
BENCH.option("--frames", 30, "frames per clip", minimum=10)
RULES = {"off (min_prob alone)": None, "0.9": 0.9, "0.7 (every bundled recipe)": 0.7}


def light_drop(frames: list[np.ndarray], start: int = 8, low: float = 0.12) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    gains = [1.0 if index < start else max(low, 1.0 - (index - start) * 0.25) for index in range(len(frames))]
    noisy = (
        frame.astype(np.float32) * gain + rng.normal(0, 3, frame.shape) for frame, gain in zip(frames, gains)
    )
    return [np.clip(frame, 0, 255).astype(np.uint8) for frame in noisy]


def tilt(frames: list[np.ndarray], centre, start: int = 8) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames turned about `centre` by 4 degrees more each frame from `start` (to 40), and the maps."""
    maps = [
        cv2.getRotationMatrix2D(centre, min(40.0, max(0, index - start) * 4.0), 1.0)
        for index in range(len(frames))
    ]
    size = frames[0].shape[1::-1]
    turned = [cv2.warpAffine(frame, m, size, borderMode=cv2.BORDER_REFLECT) for frame, m in zip(frames, maps)]
    return turned, maps


def with_passer_by(frames: list[np.ndarray]) -> list[np.ndarray]:
    walker = list(portrait_frames(15, 0.0, False, width=80, height=100))
    out = [frame.copy() for frame in frames]
    for index in range(8, min(23, len(frames))):
        left = 400 - (index - 8) * 24
        out[index][0:100, left : left + 80] = walker[index - 8]
    return out


def turned_centres(centres, maps) -> list[tuple[float, float, float]]:
    return [(*(m @ np.array([x, y, 1.0])), width) for (x, y, width), m in zip(centres, maps)]


def subject_centres(detections) -> list[tuple[float, float, float]]:
    """Per clear frame: the centre and width of its largest confident face."""
    centres = []
    for faces in detections:
        box = max(
            (face.box for face in faces if face.prob >= 0.9), key=lambda b: (b[2] - b[0]) * (b[3] - b[1])
        )
        centres.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]))
    return centres


def cases(detect, frames_per_clip: int) -> dict[str, tuple[list, list | None]]:
    """Each case's detections and subject centres (None: a clear clip, compared with today)."""
    lit, dark = dusk_frames(frames_per_clip, gains=(1.0, 1.0)), dusk_frames(frames_per_clip)
    right = [[face for face in faces if face.box[0] >= 160] for faces in detect(lit)]  # the subject's side
    found = {"dusk (generated)": (detect(dark), subject_centres(right))}
    for clip in media_videos():
        frames = read_video(clip, frames_per_clip)
        clear = detect(frames)
        found[clip.stem] = (clear, None)
        if not clip.stem.startswith("liveportrait"):
            continue
        centres = subject_centres(clear)
        turned, maps = tilt(frames, centres[0][:2])
        low = 0.45 if "d19" in clip.stem else 0.3  # d19's face is lost below that; d18's is not
        dimmed_turned, late_maps = tilt(light_drop(frames, start=12, low=low), centres[0][:2], start=6)
        found[f"{clip.stem} + light drop"] = (detect(light_drop(frames)), centres)
        found[f"{clip.stem} + tilt"] = (detect(turned), turned_centres(centres, maps))
        found[f"{clip.stem} + tilt and light drop"] = (
            detect(dimmed_turned),
            turned_centres(centres, late_maps),
        )
        found[f"{clip.stem} + light drop and passer-by"] = (
            detect(with_passer_by(light_drop(frames, 5))),
            centres,
        )
    return found


def subject_frames(main, centres) -> int:
    def holds(box, centre) -> bool:
        x, y, width = centre
        return box[0] <= x <= box[2] and box[1] <= y <= box[3] and 0.5 <= (box[2] - box[0]) / width <= 2

    return sum(
        1 for position, centre in enumerate(centres) if position in main and holds(main[position].box, centre)
    )


def run(args, work) -> dict:
    crop = load_manifest("folder").crop
    detector = FaceDetector(DetectorSettings(crop.detect_max_side, crop.min_face_ratio), "cpu")
    rows = []
    for name, (detections, centres) in cases(detector.detect_video, args.frames).items():
        row = {"case": name, "frames": len(detections)}
        today = select_faces(detections, crop.min_prob).tracks
        for label, floor in RULES.items():
            tracks = select_faces(detections, crop.min_prob, floor).tracks
            main = tracks[0].detections if tracks else {}
            if centres is None:  # a clear clip: today's main face, frame for frame and box for box?
                same = (
                    today
                    and sorted(main) == sorted(today[0].detections)
                    and all(np.array_equal(main[p].box, today[0].detections[p].box) for p in main)
                )
                row[label] = f"{len(main)} frames, {'as today' if same else 'CHANGED'}"
            else:
                row[label] = subject_frames(main, centres)
        rows.append(row)
    return {"cases": rows, "min_prob": crop.min_prob}


def report(results: dict) -> None:
    columns = [Column("case", "case")] + [Column(label, label) for label in RULES]
    print_table(
        "Frames with the subject as the main face (clear clips: the main face against today's)",
        columns,
        results["cases"],
    )


if __name__ == "__main__":
    BENCH.main(run, report)
