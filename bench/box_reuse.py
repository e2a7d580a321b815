"""Box reuse versus detection on the fake itself: how far apart the crops and the scores are.

FF++ and DFDC builds crop a fake with its original's boxes; `ffx predict` detects on the fake. On
SYNTHETIC original/fake pairs of the bundled portrait (the fake's pan `offset` radians later; 0 is
the pixel-aligned control), with the FF++ recipe's detector and crop, per fake frame: the IoU of the
two boxes and of the two crop windows, the centre shift, the pixel difference of the two crops; with
--checkpoint, the |score difference| of the two crops as `ffx predict` scores them and label flips.

    .venv/bin/python bench/box_reuse.py --pairs 8 --offsets 0.3,0 [--checkpoint run/last.safetensors]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from common import environment
from common.harness import Bench, Column, print_table

from ffx.pipeline.media.faces import box_iou, crop_box, select_faces
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.workers.crop import _resize
from ffx.synthetic import portrait_frames, write_h264_video

RECIPE, LABEL_THRESHOLD = "ffpp-c23", 0.5
BENCH = Bench("box_reuse", __doc__)
BENCH.option("--pairs", 8, "original/fake pairs", minimum=1)
BENCH.option("--frames", 30, "frames per clip", minimum=2)
BENCH.option("--width", 256, "clip width", minimum=16)
BENCH.option("--height", 320, "clip height", minimum=16)
BENCH.option("--offsets", "0.3,0", "the fakes' pan offsets in radians; 0 is the aligned control")
BENCH.option("--checkpoint", None, "an ffx checkpoint to score both crops with", type=Path)
BENCH.option("--device", "cpu", "detector and model device")


def main_faces(detector, path: Path, crop) -> tuple[list[np.ndarray], list]:
    """A clip's frames (ffx's PyAV decode) and each one's main face as a build selects it (or None)."""
    from ffx.pipeline.media.decode import decode_pyav
    from ffx.pipeline.media.sampling import FramePlan

    frames = [frame.rgb for frame in decode_pyav(path, FramePlan(None, None, None), 1)]
    tracks, _ = select_faces(detector.detect_video(frames), crop.min_prob, crop.track_min_prob)
    main = tracks[0].detections if tracks else {}
    return frames, [main.get(position) for position in range(len(frames))]


def scorer(checkpoint: Path, device: str, crop):
    """A function scoring windows of an image as `ffx predict` scores a crop (resized to the
    checkpoint's crop size, PNG bytes decoded as the loader decodes a sample); its notes."""
    from ffx.data import decode_sample, loader_spaces, resolve_colour_on
    from ffx.model.checkpoint import checkpoint_metadata, describe_checkpoint, load_model, model_images
    from ffx.pipeline.media.images import encode_png
    from ffx.train.evaluate import checkpoint_classes, fake_scores

    description, model = describe_checkpoint(checkpoint), load_model(checkpoint, device)
    classes = checkpoint_classes(checkpoint_metadata(checkpoint), model.config.num_classes, checkpoint)
    colour_on = resolve_colour_on(description["colour_on"], device)
    spaces = loader_spaces(model.config.spaces, colour_on)
    real = torch.tensor(list(classes.real), device=device)
    trained = description["data_recipe"].get("crop") or {}
    size, notes = int(trained.get("size", crop.size)), list(classes.notes)
    if trained.get("preset", crop.preset) != crop.preset:
        notes.append(f"checkpoint trained on {trained['preset']} crops; windows here are {crop.preset}'s")

    def score(image: np.ndarray, windows: list) -> list[float]:
        pngs = [encode_png(_resize(image, window, size), 1) for window in windows]
        samples = [{"__key__": str(n), "rgb.png": p, "cls": b"-1", "json": b"{}"} for n, p in enumerate(pngs)]
        images = torch.stack([decode_sample(one, spaces, description["crop"])["image"] for one in samples])
        config, device_ = model.config, torch.device(device)
        with torch.no_grad():
            batch = model_images(images, device_, config.spaces, colour_on, config.mean, config.std)
            return fake_scores(model(batch), real)

    return score, {"path": str(checkpoint), "size": size, "input_crop": description["crop"], "notes": notes}


def compare(image: np.ndarray, box_o, box_f, crop) -> dict:
    """The box, window and pixel figures of one fake frame: reused box (o) vs own detection (f)."""
    size = image.shape[1::-1]  # width, height
    window_o, window_f = (crop_box(crop.preset, b, *size, crop.size, crop.scale) for b in (box_o, box_f))

    pixels_o, pixels_f = (_resize(image, w, crop.size).astype(np.int16) for w in (window_o, window_f))
    centres = [np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], np.float64) for b in (box_o, box_f)]
    return {
        "box_iou": box_iou(box_o, box_f),
        "window_iou": box_iou(window_o, window_f),
        "centre_shift_px": float(np.linalg.norm(centres[0] - centres[1])),
        "pixel_mad": float(np.abs(pixels_o - pixels_f).mean()),
        "window_o": [int(value) for value in window_o],
        "window_f": [int(value) for value in window_f],
    }


def summary(name: str, offset: float, records: list[dict]) -> dict:
    """One table row over `records` (frames of fakes at one offset): each figure's mean and worst."""
    both = [record for record in records if record["both_faces"]]
    row: dict = {"fake": name, "offset": offset, "frames": f"{len(both)}/{len(records)}"}
    for key in ("box_iou", "window_iou", "centre_shift_px", "pixel_mad") if both else ():
        values = np.array([record[key] for record in both])
        worst = values.min() if "iou" in key else values.max()
        row |= {f"{key}_mean": float(values.mean()), f"{key}_worst": float(worst)}
    if both and "score_o" in both[0]:
        reused, own = (np.array([record[key] for record in both]) for key in ("score_o", "score_f"))
        videos = [[r for r in both if r["pair"] == pair] for pair in sorted({r["pair"] for r in both})]
        diffs = [abs(np.mean([r["score_o"] - r["score_f"] for r in rs])) for rs in videos]  # per-video means
        values = {"score_o_mean": reused.mean(), "score_f_mean": own.mean(), "video_diff": np.mean(diffs)}
        values |= {"diff_mean": np.abs(reused - own).mean(), "diff_max": np.abs(reused - own).max()}
        row |= {key: float(value) for key, value in values.items()}
        row["label_flips"] = int(((reused >= LABEL_THRESHOLD) != (own >= LABEL_THRESHOLD)).sum())
    return row


def run(args, workdir: Path) -> dict:
    """Generate the pairs, detect, compare, score; the results record."""
    from ffx.pipeline.media.detect import DetectorSettings, FaceDetector

    torch.set_num_threads(1)  # as each crop worker (workers/crop.py): boxes do not depend on cores
    started, offsets = time.perf_counter(), [float(value) for value in args.offsets.split(",")]
    crop = load_manifest(RECIPE).crop
    detector = FaceDetector(DetectorSettings(crop.detect_max_side, crop.min_face_ratio), args.device)
    score, checkpoint = scorer(args.checkpoint, args.device, crop) if args.checkpoint else (None, None)
    per_pair, frames = [], []
    for number in range(args.pairs):
        phase = (number * 0.9) % (2 * math.pi)  # bench/scale_tree.py's phases, 0.9 rad apart
        size = (args.width, args.height, number)
        clip = workdir / f"original-{number:02d}.mp4"
        write_h264_video(clip, portrait_frames(args.frames, phase, False, *size))
        original = main_faces(detector, clip, crop)[1]
        for offset in offsets:
            path = workdir / f"fake-{number:02d}-{offset:g}.mp4"
            write_h264_video(path, portrait_frames(args.frames, phase + offset, True, *size))
            records, (images, own) = [], main_faces(detector, path, crop)
            for position, (image, face_o, face_f) in enumerate(zip(images, original, own)):
                record = {"pair": number, "offset": offset, "frame": position}
                record["both_faces"] = face_o is not None and face_f is not None
                if record["both_faces"]:
                    record |= compare(image, face_o.box, face_f.box, crop)
                    if score is not None:
                        windows = [record["window_o"], record["window_f"]]
                        record["score_o"], record["score_f"] = score(image, windows)
                records.append(record)
            per_pair.append(summary(f"pair {number}", offset, records))
            frames += records
    overall = [summary("all", offset, [r for r in frames if r["offset"] == offset]) for offset in offsets]
    figures = {"per_pair": per_pair, "overall": overall, "frames": frames, "checkpoint": checkpoint}
    return figures | {
        "data": "synthetic: generated portrait clips (ffx.synthetic.portrait_frames), not real videos",
        "environment": environment(torch=torch.__version__),
        "recipe": RECIPE,
        "crop": crop.model_dump(mode="json"),
        "wall_seconds": time.perf_counter() - started,
    }


def report(results: dict) -> None:
    """The tables: per pair and overall, box and pixel figures, then scores when measured."""
    rows, crop = results["per_pair"] + results["overall"], results["crop"]
    columns = [Column("fake", "fake"), Column("offset rad", "offset", "g"), Column("frames", "frames")]
    for key in ("box_iou", "window_iou", "centre_shift_px", "pixel_mad"):
        columns += [Column(f"{key} {what}", f"{key}_{what}", ".3f") for what in ("mean", "worst")]
    title = f"Reused box vs own detection ({results['recipe']}, {crop['preset']}, {crop['size']} px; "
    print_table(title + "frames: compared/all; worst: min IoU, max shift and MAD)", columns, rows)
    if (checkpoint := results["checkpoint"]) is not None:
        keys = ("score_o_mean", "score_f_mean", "diff_mean", "diff_max", "video_diff", "label_flips")
        columns = columns[:2] + [Column(key, key, ".4f") for key in keys]
        print_table(f"Scores of both crops ({checkpoint['path']}, {checkpoint['size']} px)", columns, rows)
        for note in checkpoint["notes"]:
            print(f"note: {note}")
    print(f"\nWall time: {results['wall_seconds']:.1f} s" + ("" if checkpoint else " (no --checkpoint)"))


if __name__ == "__main__":
    BENCH.main(run, report)
