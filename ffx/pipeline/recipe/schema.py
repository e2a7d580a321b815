"""Table schemas and key rules: the contract between stages (statuses: ffx.pipeline.engine.statuses)."""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

UNKNOWN_LABEL = -1
UNKNOWN_LABEL_NAME = "unknown"
SPLITS = ("train", "val", "test")

VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the dataset root, POSIX
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),  # UNKNOWN_LABEL when not labelled
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),  # manipulation method, or "original"
        pa.field("split", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),  # identity group: never straddles splits
        pa.field("original_key", pa.string(), nullable=True),  # a fake's source video
        pa.field("size_bytes", pa.int64(), nullable=False),  # -1: a link to a missing file
        pa.field("resolved", pa.string(), nullable=False),  # the file symbolic links lead to, or ""
    ]
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
SEGMENT_JOIN = "__"


def key_from_path(relative_path: str) -> str:
    """A stable key safe for file names and WebDataset: [A-Za-z0-9_-] only, no dots.

    Path segments join with "__" and the extension is dropped. When a character had to be
    replaced, 8 hex digits of the path's sha1 are appended so different paths stay distinct.
    """
    segments = relative_path.split("/")
    stem, dot, _extension = segments[-1].rpartition(".")
    segments[-1] = stem if dot and stem else segments[-1]
    cleaned = [_UNSAFE.sub("-", segment) for segment in segments]
    lossy = cleaned != segments or any(SEGMENT_JOIN in segment for segment in segments)
    key = SEGMENT_JOIN.join(cleaned)
    if lossy:
        key += "-" + hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:8]
    return key


def is_safe_key(key: str) -> bool:
    """True when `key` can name a file and a WebDataset sample (no dots, slashes or `..`)."""
    return bool(key) and _UNSAFE.search(key) is None


# Every stage row: a digest of the stage's settings and the item's upstream rows, so an item whose
# inputs changed is redone and a table made from other inputs is never read (ffx.pipeline.engine.stage).
MADE_FROM_FIELD = pa.field("made_from", pa.string(), nullable=False)

# One row per extracted frame; a video that gave no frame has one row with frame_index -1
# (NO_FRAME). Video-level facts (status, backend, container metadata) repeat on each of its rows.
FRAMES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),  # in decode order, from 0
        pa.field("timestamp", pa.float64(), nullable=True),  # presentation time, seconds
        pa.field("width", pa.int32(), nullable=False),  # upright frame size
        pa.field("height", pa.int32(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # PNG relative to the build; "" if not kept
        pa.field("pixels_sha256", pa.string(), nullable=False),  # of the decoded RGB frame; "" if none
        pa.field("status", pa.string(), nullable=False),  # the video's status
        pa.field("error", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),  # decoder that produced the frames
        pa.field("frames_asked", pa.int32(), nullable=False),  # -1: as many as the video has
        pa.field("frames_got", pa.int32(), nullable=False),
        pa.field("video_frames", pa.int32(), nullable=False),  # container's count; -1 unknown
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("rotation", pa.int16(), nullable=False),
        MADE_FROM_FIELD,
    ]
)

# One row per frame and face track (track 0 is the video's main face; with --all-faces every
# track gets rows). A frame without a usable face has one row with track -1 (NO_TRACK) and no
# boxes; a video that gave no frame upstream has one row with frame_index -1 and its upstream status.
FACES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("track", pa.int16(), nullable=False),
        pa.field("x1", pa.float32(), nullable=True),  # the face box MTCNN found, full resolution
        pa.field("y1", pa.float32(), nullable=True),
        pa.field("x2", pa.float32(), nullable=True),
        pa.field("y2", pa.float32(), nullable=True),
        pa.field("crop_x1", pa.int32(), nullable=True),  # the box actually cut, before resizing
        pa.field("crop_y1", pa.int32(), nullable=True),
        pa.field("crop_x2", pa.int32(), nullable=True),
        pa.field("crop_y2", pa.int32(), nullable=True),
        pa.field("prob", pa.float32(), nullable=True),
        pa.field("landmarks", pa.list_(pa.float32(), 10), nullable=True),  # x,y of eyes, nose, mouth
        # `crop.landmarks`: x,y of each point of the dlib shape model (68, or the model's count) in
        # full-frame pixels (a pixel's centre is a whole number); null when off or without a crop.
        pa.field("dense_landmarks", pa.list_(pa.float32()), nullable=True),
        # The `aligned` preset's map from frame to crop pixels, 2x3 row-major; null for box presets
        # (their crop is crop_x1..crop_y2 resized to size x size).
        pa.field("crop_matrix", pa.list_(pa.float64()), nullable=True),
        pa.field("n_faces", pa.int16(), nullable=False),  # faces at or above --min-prob in the frame
        pa.field("box_source", pa.string(), nullable=False),  # detected | original | track | ""
        pa.field("path", pa.string(), nullable=False),  # crop PNG relative to the build; "" if none
        pa.field("mask_path", pa.string(), nullable=True),  # `crop.mask`: its PNG beside the crop, or ""/null
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        MADE_FROM_FIELD,
    ]
)

# One row per face crop packed as a sample (`ffx shard`); a video with no crop has one row with
# frame_index -1, an empty sample name and the reason in status and error. `offset` and `length`
# locate the sample's tar records inside BUILD/samples/{key}.tar.
SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("sample", pa.string(), nullable=False),  # WebDataset key; "" when none
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("track", pa.int16(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the records: packing checks it
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        MADE_FROM_FIELD,
    ]
)


# Label names that mean a real (pristine) video wherever ffx must tell real from fake: metrics,
# exports, validation.
REAL_NAMES = ("pristine", "real", "original")


def is_real_name(name: str | None) -> bool:
    """Whether a label name means real (case and surrounding spaces ignored)."""
    return name is not None and name.strip().lower() in REAL_NAMES
