"""`ffx demo`: the pipeline end to end on generated clips, on a CPU, in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffx.pipeline.recipe.manifest import load_manifest
from ffx.pipeline.stages.build import BuildReport, run_build
from ffx.synthetic import portrait_frames, write_h264_video

DEMO_VIDEOS = {"real": 6, "fake": 6}
DEMO_FRAMES = 40


@dataclass
class DemoReport:
    """Where the demo put its data, and what each stage of its build reported."""

    data: Path
    build: BuildReport


def make_demo_data(data: Path, frames: int = DEMO_FRAMES) -> Path:
    """Write the demo's real/ and fake/ clips (the bundled portrait, panned; fakes with an
    altered face) under `data`, keeping clips already there."""
    for label, count in DEMO_VIDEOS.items():
        for number in range(count):
            path = data / label / f"{label}_{number:02d}.mp4"
            if not path.is_file():
                pictures = portrait_frames(frames, phase=number * 0.9, fake=label == "fake")
                write_h264_video(path, pictures)
    return data


def run_demo(workdir: Path, show_progress: bool = True) -> DemoReport:
    """Generate the demo clips under `workdir/data` and build them into `workdir/build`."""
    data = make_demo_data(Path(workdir) / "data")
    build = run_build(load_manifest("demo"), data, Path(workdir) / "build", show_progress=show_progress)
    return DemoReport(data, build)
