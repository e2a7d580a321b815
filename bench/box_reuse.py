"""Box reuse versus detection on the fake itself: how far apart the crops and the scores are.

FF++ and DFDC builds crop every fake with its ORIGINAL video's face boxes
(`crop.boxes_from_original = true`), so checkpoints are trained on such crops; `ffx predict` on a
raw fake has no original and detects the face on the fake. This script measures the difference on
SYNTHETIC data: generated original/fake pairs of H.264 clips of the bundled portrait
(`ffx.synthetic.portrait_frames`, as bench/scale_tree.py makes them), the fake with the original's
seed (same brightness), the mouth alteration fakes have, and its pan started `offset` radians
later (`phase + offset`: the whole picture, face included, moves by a few pixels and zooms by
about 1 %). An offset of 0 is the pixel-aligned control (FF++'s fakes are pixel-aligned): there
the two boxes differ only because the detector sees the altered mouth.

For every fake frame: box_o, the original's main-face box in that frame (what a build reuses),
and box_f, the main face detected on the fake (what `ffx predict` uses), each found as a build
finds it (FaceDetector with the recipe's detector settings, `select_faces` with its min_prob,
track 0). Figures per pair and overall: the IoU of the two boxes, the IoU of the two integer crop
windows actually cut (`crop_box` with the recipe's preset, scale and size), the shift of the box
centres in pixels, and the mean absolute difference of the two resized crops (grey levels, 0-255).
Detection and crop settings are those of the FF++ recipe (`ffpp-c23`).

With `--checkpoint`, both crops of every fake frame are scored as `ffx predict` scores a crop: the
same window resized to the checkpoint's recorded crop size, PNG-encoded, `decode_sample` with the
checkpoint's spaces and centre crop, `model_images`, `fake_scores`. Reported: the mean and largest
|score difference| per frame, the |difference| of the per-video mean scores, and how many frames
change label at 0.5. Without a checkpoint only the box and pixel figures are measured.

Run from the repository root (about 35 s on 2 cores at the defaults; one torch thread, as a crop worker):

    .venv/bin/python bench/box_reuse.py
    .venv/bin/python bench/box_reuse.py --pairs 8 --offsets 0.3,0 --checkpoint run/last.safetensors

The figures are printed and written to bench/results/box_reuse-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import Column, add_workdir_options, arguments_record, environment, print_table, run_and_report

from ffx.pipeline.media.faces import Detection, box_iou, crop_box, select_faces
from ffx.pipeline.recipe.manifest import load_manifest
from ffx.synthetic import portrait_frames, write_h264_video

BENCHMARK = "box_reuse"
RECIPE = "ffpp-c23"
LABEL_THRESHOLD = 0.5


@dataclass
class Scorer:
    """A checkpoint ready to score crops as `ffx predict` does."""

    model: object
    real_index: object
    spaces: tuple[str, ...]
    loader_spaces: tuple[str, ...]
    input_crop: int | None
    colour_on: str
    size: int  # the crop size the checkpoint was trained on
    preset: str
    notes: list[str]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="original/fake pairs (default 8)")
    parser.add_argument("--frames", type=int, default=30, help="frames per clip (default 30)")
    parser.add_argument("--width", type=int, default=256, help="clip width (default 256)")
    parser.add_argument("--height", type=int, default=320, help="clip height (default 320)")
    parser.add_argument(
        "--offsets",
        default="0.3,0",
        help="the fakes' pan offsets in radians, comma-separated; 0 is the pixel-aligned control "
        "(default 0.3,0)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="an ffx checkpoint to score both crops with"
    )
    parser.add_argument("--device", default="cpu", help="detector and model device (default cpu)")
    add_workdir_options(parser, "the generated clips")
    args = parser.parse_args()
    args.offsets = [float(value) for value in args.offsets.split(",")]
    if args.pairs < 1 or args.frames < 2:
        parser.error("--pairs must be >= 1 and --frames >= 2")
    return args


def make_pair(folder: Path, number: int, offsets: list[float], args: argparse.Namespace) -> dict:
    """Write pair `number`'s original and one fake per offset as H.264; their paths by name."""
    phase = (number * 0.9) % (2 * math.pi)  # bench/scale_tree.py's phases, 0.9 rad apart
    size = (args.frames, args.width, args.height)
    clips = {
        "original": write_h264_video(
            folder / f"original-{number:02d}.mp4",
            portrait_frames(size[0], phase, False, size[1], size[2], number),
        )
    }
    for offset in offsets:
        clips[offset] = write_h264_video(
            folder / f"fake-{number:02d}-{offset:g}.mp4",
            portrait_frames(size[0], phase + offset, True, size[1], size[2], number),
        )
    return clips


def decode(path: Path) -> list[np.ndarray]:
    """Every frame of a clip, as ffx's PyAV backend decodes it (RGB)."""
    from ffx.pipeline.media.decode import decode_pyav
    from ffx.pipeline.media.sampling import FramePlan

    return [frame.rgb for frame in decode_pyav(path, FramePlan(None, None, None), 1)]


def main_faces(detector, frames: list[np.ndarray], crop) -> list[Detection | None]:
    """Each frame's main-face detection (track 0) as a build selects it, None where it has none."""
    found = detector.detect_video(frames)
    tracks, _ = select_faces(found, crop.min_prob, crop.track_min_prob)
    main = tracks[0].detections if tracks else {}
    return [main.get(position) for position in range(len(frames))]


def resize_crop(image: np.ndarray, window, size: int) -> np.ndarray:
    """Cut `window` and resize it to size x size as ffx's crop worker does (its own function)."""
    from ffx.pipeline.workers.crop import _resize

    return _resize(image, window, size)


def centre(box) -> np.ndarray:
    """The centre (x, y) of a box."""
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


def compare_frame(image: np.ndarray, box_o, box_f, crop) -> dict:
    """The box, window and pixel figures of one fake frame: reused box vs own detection."""
    height, width = image.shape[:2]
    window_o = crop_box(crop.preset, box_o, width, height, crop.size, crop.scale)
    window_f = crop_box(crop.preset, box_f, width, height, crop.size, crop.scale)
    pixels_o = resize_crop(image, window_o, crop.size).astype(np.int16)
    pixels_f = resize_crop(image, window_f, crop.size).astype(np.int16)
    return {
        "box_iou": box_iou(box_o, box_f),
        "window_iou": box_iou(window_o, window_f),
        "centre_shift_px": float(np.linalg.norm(centre(box_o) - centre(box_f))),
        "size_ratio": float((box_f[2] - box_f[0]) / (box_o[2] - box_o[0])),
        "pixel_mad": float(np.abs(pixels_o - pixels_f).mean()),
        "window_o": [int(value) for value in window_o],
        "window_f": [int(value) for value in window_f],
    }


def load_scorer(checkpoint: Path, device: str, crop) -> Scorer:
    """The checkpoint's model and input settings, as `ffx predict` reads them."""
    import torch

    from ffx.data import loader_spaces, resolve_colour_on
    from ffx.model.checkpoint import checkpoint_metadata, describe_checkpoint, load_model
    from ffx.train.evaluate import checkpoint_classes

    description = describe_checkpoint(checkpoint)
    model = load_model(checkpoint, device)
    classes = checkpoint_classes(checkpoint_metadata(checkpoint), model.config.num_classes, checkpoint)
    colour_on = resolve_colour_on(description["colour_on"], device)
    trained = description["data_recipe"].get("crop") or {}
    notes = list(classes.notes)
    preset = trained.get("preset", crop.preset)
    if preset != crop.preset:
        notes.append(f"checkpoint trained on {preset} crops; windows here are {crop.preset}'s")
    return Scorer(
        model,
        torch.tensor(list(classes.real), device=device),
        tuple(model.config.spaces),
        loader_spaces(model.config.spaces, colour_on),
        description["crop"],
        colour_on,
        int(trained.get("size", crop.size)),
        preset,
        notes,
    )


def score_windows(scorer: Scorer, device: str, image: np.ndarray, windows: list) -> list[float]:
    """The fake score of each window of `image`: resized to the checkpoint's crop size, PNG bytes
    decoded as the shards' loader decodes a sample, scored as `ffx eval` scores it."""
    import torch

    from ffx.data import decode_sample
    from ffx.model.checkpoint import model_images
    from ffx.pipeline.media.images import encode_png
    from ffx.train.evaluate import fake_scores

    samples = [
        {
            "__key__": f"crop_{n:04d}",
            "rgb.png": encode_png(resize_crop(image, window, scorer.size), 1),
            "cls": b"-1",
            "json": b"{}",
        }
        for n, window in enumerate(windows)
    ]
    images = torch.stack(
        [decode_sample(sample, scorer.loader_spaces, scorer.input_crop)["image"] for sample in samples]
    )
    config = scorer.model.config
    with torch.no_grad():
        batch = model_images(
            images, torch.device(device), scorer.spaces, scorer.colour_on, config.mean, config.std
        )
        return fake_scores(scorer.model(batch), scorer.real_index)


def measure_pair(detector, number: int, clips: dict, crop, scorer: Scorer | None, device: str) -> list[dict]:
    """Per-frame records of every fake of pair `number` (one list over its offsets)."""
    original = main_faces(detector, decode(clips["original"]), crop)
    records = []
    for offset, path in clips.items():
        if offset == "original":
            continue
        frames = decode(path)
        own = main_faces(detector, frames, crop)
        for position, (image, face_o, face_f) in enumerate(zip(frames, original, own)):
            record = {"pair": number, "offset": offset, "frame": position}
            record["both_faces"] = face_o is not None and face_f is not None
            if face_o is not None and face_f is not None:
                record |= compare_frame(image, face_o.box, face_f.box, crop)
                if scorer is not None:
                    windows = [record["window_o"], record["window_f"]]
                    record["score_o"], record["score_f"] = score_windows(scorer, device, image, windows)
            records.append(record)
    return records


def summary(name: str, offset: float, records: list[dict]) -> dict:
    """One table row: the figures over `records` (frames of one or more fakes at one offset)."""
    both = [record for record in records if record["both_faces"]]
    row: dict = {"fake": name, "offset": offset, "frames": len(records), "compared": len(both)}
    if not both:
        return row
    for key in ("box_iou", "window_iou", "centre_shift_px", "pixel_mad"):
        values = np.array([record[key] for record in both])
        row[f"{key}_mean"], row[f"{key}_min"], row[f"{key}_max"] = (
            float(values.mean()),
            float(values.min()),
            float(values.max()),
        )
    if "score_o" in both[0]:
        reused = np.array([record["score_o"] for record in both])
        own = np.array([record["score_f"] for record in both])
        row["score_o_mean"], row["score_f_mean"] = float(reused.mean()), float(own.mean())
        row["score_diff_mean"] = float(np.abs(reused - own).mean())
        row["score_diff_max"] = float(np.abs(reused - own).max())
        videos = sorted({record["pair"] for record in both})
        row["video_score_diff"] = float(np.mean([_video_diff(both, pair) for pair in videos]))
        row["label_flips"] = int(((reused >= LABEL_THRESHOLD) != (own >= LABEL_THRESHOLD)).sum())
    return row


def _video_diff(records: list[dict], pair: int) -> float:
    """|mean score with reused boxes - mean score with own boxes| of one fake video."""
    mine = [record for record in records if record["pair"] == pair]
    return abs(float(np.mean([r["score_o"] for r in mine])) - float(np.mean([r["score_f"] for r in mine])))


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Generate the pairs, detect, compare, score; the results record."""
    import torch

    from ffx.pipeline.media.detect import DetectorSettings, FaceDetector

    torch.set_num_threads(1)  # as each crop worker (workers/crop.py): boxes do not depend on cores
    started = time.perf_counter()
    crop = load_manifest(RECIPE).crop
    detector = FaceDetector(DetectorSettings(crop.detect_max_side, crop.min_face_ratio), args.device)
    scorer = load_scorer(args.checkpoint, args.device, crop) if args.checkpoint else None
    per_pair, frames = [], []
    for number in range(args.pairs):
        clips = make_pair(workdir, number, args.offsets, args)
        records = measure_pair(detector, number, clips, crop, scorer, args.device)
        frames += records
        for offset in args.offsets:
            mine = [record for record in records if record["offset"] == offset]
            per_pair.append(summary(f"pair {number}", offset, mine))
    overall = [
        summary("all", offset, [record for record in frames if record["offset"] == offset])
        for offset in args.offsets
    ]
    return {
        "benchmark": BENCHMARK,
        "data": "synthetic: generated portrait clips (ffx.synthetic.portrait_frames), not real videos",
        "arguments": arguments_record(args),
        "environment": environment(torch=torch.__version__),
        "recipe": RECIPE,
        "crop": crop.model_dump(mode="json"),
        "checkpoint": None
        if scorer is None
        else {"path": str(args.checkpoint), "crop_size": scorer.size, "input_crop": scorer.input_crop}
        | {"preset": scorer.preset, "notes": scorer.notes},
        "per_pair": per_pair,
        "overall": overall,
        "frames": frames,
        "wall_seconds": time.perf_counter() - started,
    }


def report(results: dict) -> None:
    """The tables: per pair and overall, box and pixel figures, then scores when measured."""
    rows = results["per_pair"] + results["overall"]
    columns = [
        Column("fake", "fake"),
        Column("offset rad", "offset", "g"),
        Column("frames", lambda row: f"{row['compared']}/{row['frames']}"),
        Column("box IoU mean", lambda row: row.get("box_iou_mean"), ".3f"),
        Column("min", lambda row: row.get("box_iou_min"), ".3f"),
        Column("window IoU mean", lambda row: row.get("window_iou_mean"), ".3f"),
        Column("min", lambda row: row.get("window_iou_min"), ".3f"),
        Column("centre shift px", lambda row: row.get("centre_shift_px_mean"), ".2f"),
        Column("max", lambda row: row.get("centre_shift_px_max"), ".2f"),
        Column("pixel MAD", lambda row: row.get("pixel_mad_mean"), ".2f"),
        Column("max", lambda row: row.get("pixel_mad_max"), ".2f"),
    ]
    crop = results["crop"]
    title = (
        f"Synthetic pairs: reused original box vs the fake's own detection ({results['recipe']}: "
        f"{crop['preset']}, {crop['size']} px, min_prob {crop['min_prob']}; frames = compared/all)"
    )
    print_table(title, columns, rows)
    if results["checkpoint"] is not None:
        score_columns = [
            Column("fake", "fake"),
            Column("offset rad", "offset", "g"),
            Column("score reused", lambda row: row.get("score_o_mean"), ".4f"),
            Column("score own", lambda row: row.get("score_f_mean"), ".4f"),
            Column("|diff| frame mean", lambda row: row.get("score_diff_mean"), ".4f"),
            Column("max", lambda row: row.get("score_diff_max"), ".4f"),
            Column("|diff| video mean", lambda row: row.get("video_score_diff"), ".4f"),
            Column("label flips", lambda row: row.get("label_flips")),
        ]
        checkpoint = results["checkpoint"]
        print_table(
            f"Synthetic pairs: fake scores of both crops ({checkpoint['path']}, crops resized to "
            f"{checkpoint['crop_size']}, centre {checkpoint['input_crop']})",
            score_columns,
            rows,
        )
        for note in checkpoint["notes"]:
            print(f"note: {note}")
    else:
        print("\nNo --checkpoint: scores not measured.")
    print(f"\nWall time: {results['wall_seconds']:.1f} s")


def main() -> None:
    """Run the benchmark in its work dir and report."""
    run_and_report(BENCHMARK, parse_args(), run, report)


if __name__ == "__main__":
    main()
