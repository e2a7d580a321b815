"""What a training run tells: progress on stderr, metrics.jsonl, and TensorBoard event files.

A run folder's metrics.jsonl has a line per epoch: training loss, learning rate, and the
validation metrics pooled and per manipulation method. With `tensorboard`, event files go to
RUN/tensorboard.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ffx.errors import FfxError
from ffx.pipeline.engine import atomic
from ffx.pipeline.engine.progress import StageProgress, stage_progress

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
LOG_EVERY = 50  # steps between plain progress lines when stderr is not a terminal


def print_warning(text: str) -> None:
    """One `ffx: warning:` line on stderr (the default `warn` of `train`)."""
    print(f"ffx: warning: {text}", file=sys.stderr, flush=True)


def _mean(values: Sequence[float]) -> float:
    """The mean, NaN for no values."""
    return sum(values) / len(values) if values else math.nan


def _clock(seconds: float) -> str:
    """H:MM:SS (?:??:?? when unknown)."""
    if not math.isfinite(seconds):
        return "?:??:??"
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


class ProgressLines:
    """Training progress for a log file (stderr not a terminal: a Slurm job's log), one flushed
    line on stderr every `every` steps:

        train step 150/3000 epoch 2/20 loss 0.4812 lr 9.95e-03 211.4 samples/s elapsed 0:04:10 eta 1:19:12

    `loss`: the mean of the batches' losses since the previous line; samples/s: since the epoch
    began (all processes); eta: the steps left to `stop_at` at this run's pace so far (validation
    included)."""

    def __init__(self, every: int, stop_at: int, steps_per_epoch: int, epochs: int, start: int):
        self.every, self.stop_at, self.steps_per_epoch, self.epochs = every, stop_at, steps_per_epoch, epochs
        self.start, self.started = start, time.monotonic()
        self.window: list[float] = []

    def step(self, step: int, lr: float, rate: float, losses: Sequence[float]) -> None:
        """Step `step` is done (the count of steps so far), its batches' `losses`."""
        self.window += losses
        if step % self.every:
            return
        elapsed = time.monotonic() - self.started
        done = step - self.start
        eta = elapsed / done * (self.stop_at - step) if done > 0 else math.nan
        epoch = (step - 1) // self.steps_per_epoch + 1  # the epoch the step belongs to, from 1
        print(
            f"train step {step}/{self.stop_at} epoch {epoch}/{self.epochs} "
            f"loss {_mean(self.window):.4f} lr {lr:.2e} {rate:.1f} samples/s "
            f"elapsed {_clock(elapsed)} eta {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )
        self.window = []


def tensorboard_writer_class():
    """torch's TensorBoard `SummaryWriter`; without the optional `tensorboard` package, one line."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FfxError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard (or pip install 'ffx[tensorboard]')"
        ) from None
    return SummaryWriter


def write_epoch_scalars(writer, metrics: dict) -> None:
    """An epoch's metrics as TensorBoard scalars at its last step: `epoch/` the training ones,
    `val/` the pooled validation ones, `val_{method}/` each method's (frame and video AUC, BOSC)."""
    step = metrics["step"]
    for key, value in metrics.items():
        if key in ("epoch", "step") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        tag = f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"epoch/{key}"
        writer.add_scalar(tag, value, step)
    for method, levels in (metrics.get("val_methods") or {}).items():
        for level, values in levels.items():
            for name in ("auc", "bosc"):
                if values.get(name) is not None:
                    writer.add_scalar(f"val_{method}/{level}_{name}", values[name], step)
    writer.flush()


@contextmanager
def _closing(writer):
    """Close a TensorBoard writer (None: nothing) when the run ends, however it ends."""
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the saved step (a run stopped while saving)."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            atomic.write_bytes(path, "".join(line + "\n" for line in kept).encode())


def _plain_json(values: dict) -> dict:
    """NaN (a metric without both classes) as null: strict JSON readers refuse NaN."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in values.items()
    }


def append_metrics(path: Path, metrics: dict) -> None:
    """An epoch's metrics as one line of metrics.jsonl (NaN as null)."""
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(_plain_json(metrics)) + "\n")


@dataclass
class TrainLogs:
    """Where a run's progress and metrics go: the progress bar (`progress`), plain lines for a
    log file (`lines`, or None), metrics.jsonl (`metrics_file`) and TensorBoard (`writer`, or
    None); `train_logs` makes one."""

    metrics_file: Path
    progress: StageProgress
    lines: ProgressLines | None = None
    writer: object | None = None

    def step(
        self, step: int, lr: float, rate: float, samples: int, losses: Sequence[float], recent: list[float]
    ) -> None:
        """Step `step` is done: `samples` trained on, its batches' `losses`, `rate` samples/s
        since the epoch began; `recent`: the epoch's last losses, for the bar."""
        self.progress.advance(1, samples)
        recent = recent or [math.nan]
        self.progress.describe(f"train loss {sum(recent) / len(recent):.3f} lr {lr:.2e} {rate:.1f} samples/s")
        if self.lines is not None:
            self.lines.step(step, lr, rate, losses)
        if self.writer is not None and losses:
            self.writer.add_scalar("train/loss", _mean(losses), step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/samples_per_second", rate, step)

    def epoch(self, metrics: dict) -> None:
        """An epoch's metrics, validation included: a line of metrics.jsonl, TensorBoard scalars."""
        append_metrics(self.metrics_file, metrics)
        if self.writer is not None:
            write_epoch_scalars(self.writer, metrics)


@contextmanager
def train_logs(
    run: Path,
    start: int,
    stop_at: int,
    steps_per_epoch: int,
    epochs: int,
    *,
    bar: bool,
    log_every: int,
    writer_class=None,
    resume: bool = False,
) -> Iterator[TrainLogs]:
    """The logs of a run going from step `start` to `stop_at`: a rich bar with `bar`, a plain
    line every `log_every` steps (0: none), TensorBoard event files in RUN/tensorboard with
    `writer_class` (`tensorboard_writer_class`; a resumed run's later events purged). The
    writer is closed however the run ends."""
    lines = ProgressLines(log_every, stop_at, steps_per_epoch, epochs, start) if log_every > 0 else None
    writer = None
    if writer_class is not None:
        writer = writer_class(log_dir=str(run / TENSORBOARD_DIR), purge_step=start if resume else None)
    with stage_progress("train", stop_at, "steps", "samples", bar) as progress, _closing(writer):
        progress.resume_at(start)
        yield TrainLogs(run / METRICS_FILE, progress, lines, writer)
