"""Face geometry: crop boxes for the presets, IoU, and the tracker that follows one person.

Boxes are (x1, y1, x2, y2) in full-resolution pixels, x2/y2 exclusive, as MTCNN returns them.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

PRESETS = ("mcx-api", "square-1.3")
PERSISTENT = 0.9  # a track in this share of the longest track's frames can be the main face


def mcx_api_box(face_box, image_width: int, image_height: int, size: int = 512, margin: int = 120):
    """The crop box of facenet-pytorch's `extract_face(img, box, size, margin)`, which the public
    MCX-API code gets from `MTCNN(image_size=512, margin=120)`: the box widened by
    margin*w/(size-margin) and margin*h/(size-margin) in total, clipped, truncated to ints.
    The crop is then resized to size x size without keeping its aspect (as the public code does)."""
    x1, y1, x2, y2 = (float(value) for value in face_box)
    margin_x = margin * (x2 - x1) / (size - margin)
    margin_y = margin * (y2 - y1) / (size - margin)
    return (
        int(max(x1 - margin_x / 2, 0)),
        int(max(y1 - margin_y / 2, 0)),
        int(min(x2 + margin_x / 2, image_width)),
        int(min(y2 + margin_y / 2, image_height)),
    )


def square_box(face_box, image_width: int, image_height: int, scale: float = 1.3):
    """FaceForensics++'s `get_boundingbox`: a square `scale` times the longer face side, centred
    on the face, shifted inside the image at the top/left and shrunk at the bottom/right."""
    x1, y1, x2, y2 = (float(value) for value in face_box)
    side = int(max(x2 - x1, y2 - y1) * scale)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    left = max(int(centre_x - side // 2), 0)
    top = max(int(centre_y - side // 2), 0)
    side = min(image_width - left, side)
    side = min(image_height - top, side)
    return left, top, left + side, top + side


def crop_box(preset: str, face_box, image_width: int, image_height: int, size: int, scale: float):
    """The box a preset cuts from the full-resolution frame."""
    if preset == "mcx-api":
        return mcx_api_box(face_box, image_width, image_height, size=512, margin=120)
    if preset == "square-1.3":
        return square_box(face_box, image_width, image_height, scale)
    raise ValueError(f"unknown crop preset {preset!r}; choose from {', '.join(PRESETS)}")


def box_iou(first, second) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    inter_w = min(first[2], second[2]) - max(first[0], second[0])
    inter_h = min(first[3], second[3]) - max(first[1], second[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    area_first = (first[2] - first[0]) * (first[3] - first[1])
    area_second = (second[2] - second[0]) * (second[3] - second[1])
    return float(inter / (area_first + area_second - inter))


def box_area(box) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def link_score(predicted, box, min_iou: float) -> float:
    """How well a detection continues a track: its IoU with the predicted box when that reaches
    `min_iou`; otherwise a smaller score when a face of similar size sits within 3/4 of a face
    width of the prediction (a fast face before its velocity is known); else 0."""
    overlap = box_iou(predicted, box)
    if overlap >= min_iou:
        return overlap
    width, other_width = predicted[2] - predicted[0], box[2] - box[0]
    centre_distance = np.hypot(
        (predicted[0] + predicted[2] - box[0] - box[2]) / 2,
        (predicted[1] + predicted[3] - box[1] - box[3]) / 2,
    )
    if 2 / 3 <= other_width / width <= 3 / 2 and centre_distance <= 0.75 * width:
        return min_iou * (1 - centre_distance / width)
    return 0.0


@dataclass
class Detection:
    """One face found in one frame."""

    box: np.ndarray  # (4,) full-resolution pixels
    prob: float
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners


@dataclass
class Track:
    """One person followed across frames: position in the frame list -> detection."""

    detections: dict[int, Detection] = field(default_factory=dict)

    @property
    def last_position(self) -> int:
        return max(self.detections)

    def predicted_box(self, position: int) -> np.ndarray:
        """Where the face should be at `position`, moving on at its last velocity."""
        positions = sorted(self.detections)
        last = self.detections[positions[-1]].box
        if len(positions) < 2:
            return last
        previous = self.detections[positions[-2]].box
        velocity = (last - previous) / (positions[-1] - positions[-2])
        return last + velocity * (position - positions[-1])

    @property
    def mean_area(self) -> float:
        return sum(box_area(detection.box) for detection in self.detections.values()) / len(self.detections)


def track_faces(frames: list[list[Detection]], min_iou: float = 0.3, max_gap: int = 5) -> list[Track]:
    """Link confident detections frame to frame by their overlap with each track's predicted box
    (constant velocity, so fast-moving faces stay linked); greedy, highest IoU first.

    A track continues through up to `max_gap` frames without a match. Track 0, the video's main
    face, is the largest of the tracks seen in at least `PERSISTENT` of the frames the longest
    track has: a lasting face beats a brief close-up, a large face beats a lasting bystander.
    The other tracks follow by length, then size; ties keep first-seen order."""
    return _rank(_link(frames, min_iou, max_gap))


def _link(frames: list[list[Detection]], min_iou: float, max_gap: int) -> list[Track]:
    """`track_faces`'s linking: the tracks in the order they were first seen."""
    tracks: list[Track] = []
    for position, detections in enumerate(frames):
        active = [track for track in tracks if position - track.last_position <= max_gap]
        pairs = sorted(
            (
                (link_score(track.predicted_box(position), detection.box, min_iou), order, track_index)
                for track_index, track in enumerate(active)
                for order, detection in enumerate(detections)
            ),
            key=lambda pair: (-pair[0], pair[1], pair[2]),
        )
        matched_tracks: set[int] = set()
        matched_detections: set[int] = set()
        for score, order, track_index in pairs:
            if score <= 0:
                break
            if track_index in matched_tracks or order in matched_detections:
                continue
            active[track_index].detections[position] = detections[order]
            matched_tracks.add(track_index)
            matched_detections.add(order)
        for order, detection in enumerate(detections):
            if order not in matched_detections:
                tracks.append(Track({position: detection}))
    return tracks


def _rank(tracks: list[Track]) -> list[Track]:
    """`track_faces`'s order: the main face first, then by length and size (first-seen on ties)."""
    longest = max((len(track.detections) for track in tracks), default=0)
    persistent = [track for track in tracks if len(track.detections) >= PERSISTENT * longest]
    main = max(persistent, key=lambda track: track.mean_area, default=None)
    others = sorted(
        (track for track in tracks if track is not main),
        key=lambda track: (-len(track.detections), -track.mean_area),
    )
    return [main, *others] if main is not None else []


BOX_TRACK = "track"  # box_source of a box kept below min_prob because it continues its track
CONTINUE_IOU = 0.5  # how well a less confident detection must overlap its track's expected box


class FaceSelection(NamedTuple):
    """What `select_faces` keeps: the tracks (track 0 the main face) and the (position, track
    number) pairs whose detection is a continuation below `min_prob` (box_source `track`)."""

    tracks: list[Track]
    continued: frozenset[tuple[int, int]]


def select_faces(
    frames: list[list[Detection]],
    min_prob: float,
    track_min_prob: float | None = None,
    min_iou: float = 0.3,
    max_gap: int = 5,
) -> FaceSelection:
    """The faces a video's crops come from; `frames` holds every detection of each frame.

    Tracks are linked from the detections with prob >= `min_prob`, as `track_faces` links them.
    With `track_min_prob` set, a detection with track_min_prob <= prob < min_prob continues a
    track where the track has no detection and it overlaps (IoU >= CONTINUE_IOU) the box the
    track is expected at: between two confident frames, the box linear between them; past the
    track's first or last confident frame, the box of the frame next to it on the track (so a
    subject who stays in the dark is followed frame by frame, each step checked against the one
    before; up to `max_gap` frames without a fitting detection are bridged). The tracks claim
    detections in turn, the longest confident track first (first-seen on ties), each detection at
    most once. The tracks are then ranked as `track_faces` ranks them, continuations counted, so
    a subject confident in few frames is not outranked by a steady face on a screen behind it or
    by a bright passer-by. Without `track_min_prob` the result is exactly `track_faces` on the
    confident detections."""
    if track_min_prob is not None and not 0 <= track_min_prob <= min_prob:
        raise ValueError(f"track_min_prob must lie in [0, min_prob={min_prob}], got {track_min_prob}")
    linked = _link([[d for d in detections if d.prob >= min_prob] for detections in frames], min_iou, max_gap)
    if track_min_prob is None:
        return FaceSelection(_rank(linked), frozenset())
    candidates = [[d for d in detections if track_min_prob <= d.prob < min_prob] for detections in frames]
    claimed: set[tuple[int, int]] = set()  # (position, candidate's order in its frame)
    added: dict[int, dict[int, Detection]] = {}  # track's first-seen index -> position -> detection
    for index in sorted(range(len(linked)), key=lambda index: -len(linked[index].detections)):
        added[index] = _continuations(linked[index], candidates, claimed, max_gap)
    extended = [
        Track(dict(sorted({**track.detections, **added[index]}.items()))) if added[index] else track
        for index, track in enumerate(linked)
    ]
    ranked = _rank(extended)
    first_seen = {id(track): index for index, track in enumerate(extended)}
    continued = frozenset(
        (position, number) for number, track in enumerate(ranked) for position in added[first_seen[id(track)]]
    )
    return FaceSelection(ranked, continued)


def _continuations(
    track: Track, candidates: list[list[Detection]], claimed: set[tuple[int, int]], max_gap: int
) -> dict[int, Detection]:
    """The less confident detections that continue `track` (see `select_faces`), claimed."""
    anchors = sorted(track.detections)
    found: dict[int, Detection] = {}

    def claim(position: int, expected: np.ndarray) -> Detection | None:
        """The unclaimed detection at `position` that overlaps `expected` most (then the most
        probable, then the detector's first), if it overlaps enough."""
        fits = [
            (box_iou(expected, candidate.box), candidate.prob, -order)
            for order, candidate in enumerate(candidates[position])
            if (position, order) not in claimed
        ]
        overlap, _, negative_order = max(fits, default=(0.0, 0.0, 0))
        if overlap < CONTINUE_IOU:
            return None
        claimed.add((position, -negative_order))
        found[position] = candidates[position][-negative_order]
        return found[position]

    for before, after in itertools.pairwise(anchors):  # gaps the tracker bridged: interpolated
        for position in range(before + 1, after):
            claim(position, _expected_box(track.detections, anchors, position, max_gap))
    for step, start in ((1, anchors[-1]), (-1, anchors[0])):  # beyond its ends: frame by frame
        expected, position, missed = track.detections[start].box, start + step, 0
        while 0 <= position < len(candidates) and missed <= max_gap:
            detection = claim(position, expected)
            if detection is not None:
                expected, missed = detection.box, 0
            else:
                missed += 1
            position += step
    return found


def _expected_box(
    detections: dict[int, Detection], anchors: list[int], position: int, max_gap: int
) -> np.ndarray | None:
    """The track's box at `position` (see `select_faces`), or None beyond its reach."""
    later = bisect.bisect_right(anchors, position)
    if later == 0:
        return detections[anchors[0]].box if anchors[0] - position <= max_gap else None
    if later == len(anchors):
        return detections[anchors[-1]].box if position - anchors[-1] <= max_gap else None
    before, after = anchors[later - 1], anchors[later]
    weight = (position - before) / (after - before)
    return detections[before].box + (detections[after].box - detections[before].box) * weight
