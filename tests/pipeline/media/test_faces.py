"""Crop geometry against hand computations and facenet-pytorch itself; the main-face tracker."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from ffx.pipeline.media.detect import MTCNN_MIN_FACE, pyramid_min_face
from ffx.pipeline.media.faces import (
    Detection,
    box_iou,
    mcx_api_box,
    select_faces,
    square_box,
    track_faces,
)
from ffx.pipeline.workers.crop import _resize


@pytest.mark.parametrize(
    ("face_box", "expected"),
    [
        ((100, 100, 200, 250), (84, 77, 215, 272)),  # margins 120*100/392 and 120*150/392, halved each side
        ((5, 5, 105, 155), (0, 0, 120, 177)),  # clipped at the top-left corner
        ((560, 380, 630, 479), (549, 364, 640, 480)),  # clipped at the bottom-right corner
    ],
)
def test_mcx_api_box_by_hand(face_box, expected) -> None:
    assert mcx_api_box(face_box, 640, 480) == expected


@pytest.mark.parametrize(
    ("face_box", "expected"),
    [
        ((100, 100, 200, 250), (53, 78, 248, 273)),  # side int(150*1.3) = 195 around (150, 175)
        ((10, 5, 110, 105), (0, 0, 130, 130)),  # shifted inside at the top-left, still square
        ((560, 400, 640, 480), (548, 388, 640, 480)),  # shrunk to 92 at the bottom-right, still square
    ],
)
def test_square_box_by_hand(face_box, expected) -> None:
    box = square_box(face_box, 640, 480, scale=1.3)
    assert box == expected and box[2] - box[0] == box[3] - box[1]


def test_mcx_api_crop_equals_facenet_pytorch_extract_face() -> None:
    """The public MCX-API code's crop comes from facenet-pytorch's extract_face on a PIL image."""
    from facenet_pytorch.models.utils.detect_face import extract_face

    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    for _ in range(20):
        x1, y1 = generator.uniform(-20, 400), generator.uniform(-20, 300)
        face_box = np.array([x1, y1, x1 + generator.uniform(20, 200), y1 + generator.uniform(20, 200)])
        reference = extract_face(Image.fromarray(image), face_box, 512, 120)  # float CHW, 0..255
        ours = _resize(image, mcx_api_box(face_box, 480, 360), 512)
        assert np.array_equal(ours, reference.permute(1, 2, 0).numpy().astype(np.uint8))


def test_pyramid_steps_keep_mtcnn_scales() -> None:
    factor = 0.709
    assert pyramid_min_face(10, factor) == MTCNN_MIN_FACE
    assert pyramid_min_face(MTCNN_MIN_FACE / factor - 0.01, factor) == MTCNN_MIN_FACE
    raised = pyramid_min_face(150, factor)
    steps = np.log(raised / MTCNN_MIN_FACE) / -np.log(factor)
    assert raised <= 150 < raised / factor and steps == pytest.approx(round(steps))


def face(x: float, y: float, side: float, prob: float = 0.999) -> Detection:
    return Detection(np.array([x, y, x + side, y + side], float), prob, np.zeros((5, 2)))


def test_tracker_follows_each_face_and_prefers_the_lasting_large_one() -> None:
    frames = []
    for position in range(30):
        detections = [face(400 + position, 50, 60), face(50, 180 - position, 30)]  # two people drifting
        if 20 <= position < 26:
            detections.append(face(100, 0, 300))  # a brief close-up of someone else
        frames.append(detections[::-1] if position % 2 else detections)  # order must not matter
    tracks = track_faces(frames)
    assert [len(track.detections) for track in tracks] == [30, 30, 6]
    main = tracks[0]
    assert all(main.detections[p].box[0] == 400 + p for p in range(30))  # the larger lasting face
    for track in tracks:
        boxes = [track.detections[p].box for p in sorted(track.detections)]
        assert min(box_iou(a, b) for a, b in itertools.pairwise(boxes)) > 0.8  # one identity per track


def test_tracker_follows_a_fast_face_by_its_velocity() -> None:
    # 50 px per frame: consecutive boxes overlap by IoU 0.29 only, below the link threshold.
    frames = [[face(100 + 50 * position, 300, 90), face(1400, 100, 40)] for position in range(12)]
    tracks = track_faces(frames, min_iou=0.3)
    assert [len(track.detections) for track in tracks] == [12, 12]
    assert tracks[0].detections[11].box[0] == 100 + 50 * 11


def test_tracker_bridges_short_gaps_only() -> None:
    frames = [
        [face(100, 100, 80)] if position not in (5, 6, 7, 20, 21, 22, 23, 24, 25, 26) else []
        for position in range(30)
    ]
    tracks = track_faces(frames, max_gap=5)
    assert [sorted(track.detections)[0] for track in tracks] == [0, 27]
    assert len(tracks[0].detections) == 17


def _signature(tracks) -> list[list[tuple]]:
    """Tracks as comparable values: per track, (position, box, prob) in insertion order."""
    return [
        [(position, tuple(d.box), d.prob) for position, d in track.detections.items()] for track in tracks
    ]


def test_select_faces_without_the_option_is_todays_filter_and_tracker() -> None:
    generator = np.random.default_rng(7)
    for _ in range(40):
        frames = [
            [
                face(*generator.uniform(0, 600, 2), generator.uniform(20, 200), generator.uniform(0.8, 1.0))
                for _ in range(generator.integers(0, 4))
            ]
            for _ in range(generator.integers(1, 25))
        ]
        for min_prob in (0.9, 0.95, 0.99):
            today = track_faces([[d for d in detections if d.prob >= min_prob] for detections in frames])
            tracks, continued = select_faces(frames, min_prob, None)
            assert _signature(tracks) == _signature(today) and continued == frozenset()
            assert all(
                a is b
                for ours, theirs in zip(tracks, today)
                for a, b in zip(ours.detections.values(), theirs.detections.values())
            )


def test_select_faces_keeps_a_less_confident_face_that_continues_the_main_track() -> None:
    # The main face moves 4 px a frame; frames 3-6 and 10 only reach 0.95-0.97, frame 12 only 0.85.
    low = {3: 0.97, 4: 0.96, 5: 0.97, 6: 0.95, 10: 0.97, 12: 0.85}
    frames = [[face(100 + 4 * p, 100, 120, low.get(p, 0.995))] for p in range(14)]
    before, _ = select_faces(frames, 0.99)
    assert sorted(before[0].detections) == [0, 1, 2, 7, 8, 9, 11, 13]
    tracks, continued = select_faces(frames, 0.99, 0.9)
    assert continued == {(3, 0), (4, 0), (5, 0), (6, 0), (10, 0)}  # 0.85 stays below track_min_prob
    assert sorted(tracks[0].detections) == [p for p in range(14) if p != 12] and len(tracks) == 1
    assert tracks[0].detections[4].prob == 0.96 and tracks[0].detections[4].box[0] == 116
    assert list(tracks[0].detections) == sorted(tracks[0].detections)


def test_select_faces_ignores_a_less_confident_face_elsewhere_in_the_frame() -> None:
    frames = [[face(100, 100, 120)] for _ in range(10)]
    frames[4] = [face(500, 300, 120, 0.97)]  # a 0.97 face far from the main one, which is missed
    frames[6] = [face(100, 100, 120), face(160, 100, 120, 0.97)]  # main present: no second box
    frames[8] = [face(150, 150, 120, 0.97)]  # overlaps, but IoU 0.22 < 0.5
    tracks, continued = select_faces(frames, 0.99, 0.9)
    assert continued == frozenset()
    assert sorted(tracks[0].detections) == [0, 1, 2, 3, 5, 6, 7, 9] and len(tracks) == 1


def test_select_faces_follows_a_track_frame_by_frame_beyond_its_confident_frames() -> None:
    # Confident on frames 8-10 only; then the face drifts 10 px a frame in the dark (IoU 0.85 with
    # the frame before, none with frame 10's box from frame 22 on): followed step by step.
    frames = [[face(100 + 10 * max(p - 10, 0), 100, 120, 0.999 if 8 <= p <= 10 else 0.95)] for p in range(26)]
    tracks, continued = select_faces(frames, 0.99, 0.9, max_gap=5)
    assert sorted(tracks[0].detections) == list(range(26))
    assert continued == {(p, 0) for p in range(26) if not 8 <= p <= 10}
    # Frames without a detection are bridged (up to max_gap of them) from the last box on the track.
    frames[14], frames[15] = [], []
    tracks, continued = select_faces(frames, 0.99, 0.9, max_gap=5)
    assert sorted(tracks[0].detections) == [p for p in range(26) if p not in (14, 15)]
    # A candidate that jumps away (no overlap with the frame before) ends the walk there.
    frames = [[face(100, 100, 120, 0.999 if p <= 2 else 0.95)] for p in range(6)] + [
        [face(400, 100, 120, 0.95)]
    ]
    tracks, continued = select_faces(frames, 0.99, 0.9)
    assert sorted(tracks[0].detections) == list(range(6))


def test_select_faces_follows_the_subject_not_a_bright_passer_by() -> None:
    # The subject is confident on frames 0-4 only (dark after); a smaller bright face passes on
    # frames 8-22: without continuations it is the longest track and so the main face.
    frames = [[face(200, 150, 150, 0.999 if p < 5 else 0.93)] for p in range(30)]
    for p in range(8, 23):
        frames[p].append(face(400 - 20 * (p - 8), 10, 60, 0.999))
    before, _ = select_faces(frames, 0.99)
    assert before[0].detections[8].box[1] == 10  # the passer-by
    tracks, _ = select_faces(frames, 0.99, 0.7)
    assert sorted(tracks[0].detections) == list(range(30)) and tracks[0].detections[29].box[0] == 200
    assert len(tracks[1].detections) == 15  # the passer-by keeps its own track


def test_select_faces_does_not_make_a_confident_bystander_main() -> None:
    # A large subject, confident in 9 frames of 30 (0.95-0.98 in the others), and a small face
    # on a screen behind, confident in all 30: today the screen is the only persistent track.
    frames = [
        [face(300 + p, 100, 150, 0.999 if p % 7 in (0, 3) else 0.95 + p % 4 / 100), face(20, 20, 60, 0.995)]
        for p in range(30)
    ]
    frames[10].append(face(22, 20, 60, 0.96))  # a weaker duplicate on the screen
    before, _ = select_faces(frames, 0.99)
    assert before[0].detections[0].box[0] == 20  # the screen's face is main today
    tracks, continued = select_faces(frames, 0.99, 0.9)
    assert [len(track.detections) for track in tracks] == [30, 30]
    assert all(d.box[0] == 300 + p for p, d in tracks[0].detections.items())  # the subject, never the screen
    assert continued == {(p, 0) for p in range(30) if p % 7 not in (0, 3)}
    assert _signature(tracks[1:]) == _signature(before[:1])  # the screen's track unchanged


def test_select_faces_takes_the_best_overlapping_candidate_and_checks_its_range() -> None:
    frames = [
        [face(100, 100, 100)],
        [face(130, 100, 100, 0.95), face(102, 100, 100, 0.93)],
        [face(100, 100, 100)],
    ]
    tracks, continued = select_faces(frames, 0.99, 0.9)
    assert continued == {(1, 0)} and tracks[0].detections[1].box[0] == 102  # IoU beats probability
    with pytest.raises(ValueError, match="track_min_prob"):
        select_faces(frames, 0.9, 0.95)
