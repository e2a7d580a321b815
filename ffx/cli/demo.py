"""The end-to-end demo on generated clips: demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ffx.cli.common import console, warn
from ffx.cli.reports import print_build_report, print_eval, print_predictions, print_status

if TYPE_CHECKING:
    from ffx.demo import DemoReport


def demo(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where the demo writes its data, build, run and evaluation.")
    ] = Path("ffx-demo"),
) -> None:
    """Generated clips end to end on the CPU (a minute or two): build the shards, train a small
    detector, evaluate it on the test split. A rerun reuses what is there; delete WORKDIR to start over."""
    from ffx.demo import DEMO_TRAINING, run_demo
    from ffx.pipeline.stages.status import build_status

    def built(report: DemoReport) -> None:  # before training starts
        console.print(f"demo data: {escape(str(report.data))}  build: {escape(str(report.build.build))}")
        print_build_report(report.build)
        print_status(build_status(report.build.build), title="demo build")
        if report.run is not None:
            console.print(
                f"demo detector: {DEMO_TRAINING['backbone']} from scratch on the CPU, "
                f"{DEMO_TRAINING['epochs']} epochs of {DEMO_TRAINING['crop']} px crops, in "
                f"{escape(str(report.run))}",
                highlight=False,
            )

    report = run_demo(workdir, show_progress=console.is_terminal, on_build=built, warn=warn)
    if report.run is None:
        return
    print_demo_report(report)


def print_demo_report(report: DemoReport) -> None:
    """The training line, the test split's table (as `ffx eval`) and where every output is."""
    trained = report.train
    if report.trained:
        figures = ", ".join(
            f"{name} {value:.4g}" for name, value in trained.metrics.items() if isinstance(value, float)
        )
        console.print(f"train: step {trained.step} of {trained.total_steps}; {figures}", highlight=False)
    else:
        console.print(
            f"train: the run had finished (step {trained.step} of {trained.total_steps}): not trained again",
            highlight=False,
        )
    if not report.evaluated:
        console.print("eval: metrics.json is newer than the checkpoint: shown as written", highlight=False)
    print_eval(report.metrics)
    print_predictions(report.prediction)
    console.print("demo outputs:")
    for name, path in (
        ("clips", report.data),
        ("build", report.build.build),
        ("shards", report.build.build / "shards"),
        ("run", report.run),
        ("checkpoint", report.checkpoint),
        ("evaluation", report.evaluation),
        ("ROC curve", report.evaluation / "roc.png"),
        ("predictions", report.prediction.out / "frames.csv"),
        *(("attention", sheet) for sheet in report.explanation.sheets),
        ("t-SNE", report.explanation.tsne),
    ):
        console.print(f"  {name + ':':<13}{escape(str(path))}", highlight=False)
