"""Synthetic videos whose frames encode their own index: for the demo, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

BITS = 12  # frame indices up to 4095
# Eight colours far apart in RGB, so a BGR/RGB swap or a one-off frame is visible.
PALETTE = np.array(
    [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [255, 0, 255],
        [0, 255, 255],
        [255, 255, 255],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)


def index_frame(frame_index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame: a top band of BITS black/white blocks spelling `frame_index` in binary,
    and a lower body in PALETTE[frame_index % 8]."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = PALETTE[frame_index % len(PALETTE)]
    band = height // 3
    block = width // BITS
    for bit in range(BITS):
        value = 255 if (frame_index >> bit) & 1 else 0
        frame[:band, bit * block : (bit + 1) * block] = value
    return frame


def decode_frame_index(frame: np.ndarray) -> int:
    """Read back the index spelled by `index_frame` (robust to lossy compression)."""
    height, width = frame.shape[:2]
    band, block = height // 3, width // BITS
    index = 0
    for bit in range(BITS):
        cell = frame[band // 4 : band * 3 // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        if cell.mean() > 127:
            index |= 1 << bit
    return index


def write_index_video(
    path: Path, frames: int, width: int = 96, height: int = 64, fps: float = 25.0, fourcc: str = "mp4v"
) -> Path:
    """Write a video of `frames` index frames with OpenCV; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
    for frame_index in range(frames):
        writer.write(cv2.cvtColor(index_frame(frame_index, width, height), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_h264_index_video(
    path: Path,
    frames: int,
    width: int = 96,
    height: int = 64,
    fps: int = 25,
    rotation: int = 0,
    timestamps: list[float] | None = None,
) -> Path:
    """Write index frames as H.264; see `write_h264_video` for the options."""
    pictures = (index_frame(frame_index, width, height) for frame_index in range(frames))
    return write_h264_video(path, pictures, fps, rotation, timestamps)


def write_h264_video(
    path: Path,
    pictures: Iterable[np.ndarray],
    fps: int = 25,
    rotation: int = 0,
    timestamps: list[float] | None = None,
) -> Path:
    """Write RGB frames as near-lossless H.264 with PyAV: moov first (so a truncated copy still
    decodes up to the cut), an optional display rotation (degrees) and optional per-frame times
    in seconds (variable frame rate)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast", "bf": "0"}
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for frame_index, picture in enumerate(pictures):
            if frame_index == 0:
                stream.height, stream.width = picture.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            if timestamps is not None:
                frame.pts, frame.time_base = round(timestamps[frame_index] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


PORTRAIT = Path(__file__).parent / "assets" / "portrait.jpg"  # public domain, see assets/SOURCES.md
PORTRAIT_FACE = (187, 43, 307, 207)  # MTCNN's box on it (x1, y1, x2, y2)
PORTRAIT_MOUTH = (248, 167)  # the centre of its mouth (x, y)


def alter_mouth(portrait: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """A local stand-in for a face swap: the mouth area (an ellipse of about 100 x 64 pixels,
    under a fifth of the face box) is squashed and widened, smoothed and shifted in colour,
    blended in with a soft edge. Nothing outside the ellipse changes. With `rng`, the warp and
    colour vary a little (each fake clip its own); without, the middle values."""
    height, width = portrait.shape[:2]
    centre_x, centre_y = PORTRAIT_MOUTH
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = ((xs - centre_x) / 50) ** 2 + ((ys - centre_y) / 32) ** 2
    weight = np.clip(1 - radius, 0, 1) ** 0.7  # 1 at the centre, 0 on the ellipse and outside

    def draw(low: float, high: float) -> float:
        return (low + high) / 2 if rng is None else float(rng.uniform(low, high))

    squash, widen = draw(0.5, 0.65), draw(1.1, 1.25)
    shift = np.array([draw(10, 20), draw(-5, 5), draw(-20, -10)], dtype=np.float32)
    map_x = xs + weight * (xs - centre_x) * (1 / widen - 1)
    map_y = ys + weight * (ys - centre_y) * (1 / squash - 1)
    warped = cv2.remap(portrait, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    warped = warped.astype(np.float32)
    smooth = cv2.GaussianBlur(warped, (0, 0), 1.5) + shift
    blend = np.clip(weight * 1.8, 0, 1)[..., None]
    return np.clip(warped * (1 - blend) + smooth * blend, 0, 255).astype(np.uint8)


def portrait_frames(
    frames: int,
    phase: float,
    fake: bool,
    width: int = 128,
    height: int = 160,
    seed: int | None = None,
) -> Iterable[np.ndarray]:
    """A slow pan and zoom over the bundled portrait; `fake` alters the mouth area only
    (`alter_mouth`: a crude, local stand-in for a face swap that a detector must find on the
    face). With `seed`, the clip's brightness and contrast (real or fake) and its alteration
    vary, drawn from the seed: no global colour tells the classes apart."""
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    rng = None if seed is None else np.random.default_rng(seed)
    if rng is not None:
        gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-12, 12)
        portrait = np.clip(portrait.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    if fake:
        portrait = alter_mouth(portrait, rng)
    centre_x, centre_y = (
        (PORTRAIT_FACE[0] + PORTRAIT_FACE[2]) / 2,
        (PORTRAIT_FACE[1] + PORTRAIT_FACE[3]) / 2 + 30,
    )
    for frame_index in range(frames):
        angle = 2 * np.pi * frame_index / frames + phase
        zoom = 1.0 + 0.08 * np.sin(angle)
        window_w, window_h = 240 * zoom, 300 * zoom
        left = int(np.clip(centre_x + 15 * np.cos(angle) - window_w / 2, 0, portrait.shape[1] - window_w))
        top = int(np.clip(centre_y + 10 * np.sin(angle) - window_h / 2, 0, portrait.shape[0] - window_h))
        window = portrait[top : top + int(window_h), left : left + int(window_w)]
        yield cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA)


def dusk_frames(
    frames: int = 30, gains: tuple[float, float] = (0.08, 0.13), seed: int = 14
) -> list[np.ndarray]:
    """A hard case for face tracking, 480 x 400: the portrait panning on the right, lit on about
    4 frames in 10 and darkened and blurred (gain drawn from `gains`) on the others, so MTCNN
    rates the subject below 0.99 there; a small bright still of the face at the top left (a TV
    screen behind the subject) stays confident throughout."""
    rng = np.random.default_rng(seed)
    subject = list(portrait_frames(frames, 0.3, False, width=320, height=400, seed=5))
    screen = cv2.resize(subject[0], (96, 120), interpolation=cv2.INTER_AREA)
    dark = set(rng.choice(frames, round(frames * 17 / 30), replace=False).tolist())
    pictures = []
    for frame_index, picture in enumerate(subject):
        frame = np.full((400, 480, 3), 40, np.uint8)
        if frame_index in dark:
            blurred = cv2.GaussianBlur(picture.astype(np.float32), (0, 0), rng.uniform(0, 4))
            noisy = blurred * rng.uniform(*gains) + rng.normal(0, 3, blurred.shape)
            picture = np.clip(noisy, 0, 255).astype(np.uint8)
        frame[:, 160:] = picture
        frame[20:140, 20:116] = screen
        pictures.append(frame)
    return pictures


def faceless_picture(width: int = 320, height: int = 240, seed: int = 3) -> np.ndarray:
    """An RGB picture with no face in it: smooth coloured blobs over a gradient (for `ffx predict`'s
    no-face row)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack([xs / width, ys / height, 1 - xs / width], -1) * 160 + 40
    for _ in range(6):
        centre_x, centre_y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(20, 60)
        blob = np.exp(-((xs - centre_x) ** 2 + (ys - centre_y) ** 2) / (2 * radius**2))
        picture += blob[..., None] * rng.uniform(-80, 80, 3)
    return np.clip(picture, 0, 255).astype(np.uint8)
