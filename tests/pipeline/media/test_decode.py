"""Sampling rules and the three decoding backends: exact frame indices, true RGB, rotation, VFR."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffx.errors import FfxError
from ffx.pipeline.media.decode import BACKENDS, DecodeFailure, probe
from ffx.pipeline.media.sampling import parse_sampling
from ffx.synthetic import PALETTE, decode_frame_index, write_h264_index_video, write_index_video

WIDTH, HEIGHT = 128, 96


def test_first_plan_keeps_the_first_frames_and_stops() -> None:
    plan = parse_sampling("first:30").plan(None)
    assert [i for i in range(100) if plan.keeps(i)] == list(range(30))
    assert plan.asked == 30 and plan.done(29) and not plan.done(28)


def test_stride_plan_matches_the_public_mcx_api_code() -> None:
    plan = parse_sampling("stride:10:1:301").plan(None)
    public = [i for i in range(1000) if i % 10 == 1 and i < 301]
    assert [i for i in range(1000) if plan.keeps(i)] == public
    assert plan.asked == 30 and plan.last == 291


def test_open_stride_and_all_plans_decode_to_the_end() -> None:
    stride = parse_sampling("stride:4:2").plan(None)
    assert [i for i in range(12) if stride.keeps(i)] == [2, 6, 10]
    assert stride.asked is None and not stride.done(10**6)
    everything = parse_sampling("all").plan(None)
    assert all(everything.keeps(i) for i in range(50)) and everything.asked is None


def test_linspace_plan_spreads_over_the_whole_video() -> None:
    plan = parse_sampling("linspace:32").plan(300)
    kept = sorted(plan.wanted)
    assert len(kept) == 32 and kept[0] == 0 and kept[-1] == 299
    assert np.allclose(np.diff(kept), 299 / 31, atol=1)
    with pytest.raises(FfxError, match="frame count"):
        parse_sampling("linspace:8").plan(None)


@pytest.mark.parametrize(
    "text", ["first:0", "first", "stride:10", "stride:10:10", "linspace:x", "all:3", "every"]
)
def test_bad_sampling_is_rejected(text: str) -> None:
    with pytest.raises(FfxError, match="not understood"):
        parse_sampling(text)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mpeg4": write_index_video(folder / "mpeg4.mp4", 40, WIDTH, HEIGHT),
        "h264": write_h264_index_video(folder / "h264.mp4", 40, WIDTH, HEIGHT),
    }


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_frame_i_is_decoded_frame_i_in_rgb(backend: str, codec: str, clips) -> None:
    frames = list(BACKENDS[backend](clips[codec], parse_sampling("first:30").plan(None), 1))
    assert [frame.frame_index for frame in frames] == list(range(30))
    for frame in frames:
        assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
        assert decode_frame_index(frame.rgb) == frame.frame_index
        body = frame.rgb[HEIGHT * 2 // 3 :, :].reshape(-1, 3).mean(axis=0)
        assert np.abs(body - PALETTE[frame.frame_index % len(PALETTE)]).max() < 12  # RGB, not BGR
        assert frame.timestamp == pytest.approx(frame.frame_index / 25.0, abs=1e-3)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_stride_keeps_exactly_the_strided_frames(backend: str, clips) -> None:
    frames = list(BACKENDS[backend](clips["h264"], parse_sampling("stride:3:1:20").plan(None), 1))
    assert [frame.frame_index for frame in frames] == [1, 4, 7, 10, 13, 16, 19]
    assert [decode_frame_index(frame.rgb) for frame in frames] == [1, 4, 7, 10, 13, 16, 19]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_videos_come_out_upright_from_every_backend(rotation: int, tmp_path: Path) -> None:
    path = write_h264_index_video(tmp_path / "rotated.mp4", 3, WIDTH, HEIGHT, rotation=rotation)
    assert probe(path).rotation == rotation
    plan = parse_sampling("first:3").plan(None)
    outputs = {name: [frame.rgb for frame in backend(path, plan, 1)] for name, backend in BACKENDS.items()}
    for frames in outputs.values():
        # Turning the upright frame back by the display rotation restores the encoded picture.
        restored = np.rot90(frames[1], -rotation // 90)
        assert restored.shape == (HEIGHT, WIDTH, 3) and decode_frame_index(restored) == 1
    assert np.array_equal(outputs["pyav"][1], outputs["opencv"][1])
    assert np.array_equal(outputs["pyav"][1], outputs["decord"][1])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_variable_frame_rate_keeps_true_timestamps(backend: str, tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.1, 0.13, 0.3, 0.31, 0.5, 0.52, 0.6, 0.9]
    path = write_h264_index_video(tmp_path / "vfr.mp4", len(times), WIDTH, HEIGHT, timestamps=times)
    frames = list(BACKENDS[backend](path, parse_sampling("all").plan(None), 1))
    assert [decode_frame_index(frame.rgb) for frame in frames] == list(range(len(times)))
    assert [frame.timestamp for frame in frames] == pytest.approx(times, abs=1e-3)


def test_probe_reads_container_facts_and_names_what_is_wrong(tmp_path: Path, clips) -> None:
    info = probe(clips["h264"])
    assert (info.codec, info.frames, info.width, info.height, info.fps) == ("h264", 40, WIDTH, HEIGHT, 25.0)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(DecodeFailure, match="Invalid data"):
        probe(text)


# VmHWM, not ru_maxrss: the latter carries the parent's peak across fork+exec.
PEAK_RSS_SCRIPT = """
import re, sys
import subprocess
import sys
from pathlib import Path
from ffx.pipeline.media.decode import BACKENDS
from ffx.pipeline.media.sampling import parse_sampling
frames = BACKENDS[sys.argv[1]](Path(sys.argv[2]), parse_sampling("first:24").plan(None), 2)
count = sum(1 for _ in frames)
status = open("/proc/self/status").read()
print(count, int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""


@pytest.fixture(scope="module")
def uhd_clip(tmp_path_factory) -> Path:
    return write_h264_index_video(tmp_path_factory.mktemp("uhd") / "uhd.mp4", 24, 3840, 2160)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for peak memory")
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_4k_decoding_streams_in_bounded_memory(backend: str, uhd_clip: Path) -> None:
    """24 decoded 4K frames are 600 MB; a streaming backend stays far below that."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, backend, str(uhd_clip)],
        capture_output=True,
        text=True,
        check=True,
    )
    count, peak_mb = map(int, result.stdout.split())
    assert count == 24
    assert peak_mb < 420, f"{backend} peaked at {peak_mb} MB"
