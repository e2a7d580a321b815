"""Applying a detector to videos and images: predict, explain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ffx.cli.common import CheckpointArg, DeviceOpt, SplitOpt, TimeoutOpt, WorkersOpt, console
from ffx.cli.reports import print_predictions
from ffx.errors import FfxError


def predict(
    checkpoint: CheckpointArg,
    inputs: Annotated[
        list[Path], typer.Argument(help="Videos, images, or folders of them (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for frames.csv, inputs.csv, predictions.json.")],
    threshold: Annotated[
        float, typer.Option("--threshold", help="A frame or input is `fake` at or above this score.")
    ] = 0.5,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    timeout: TimeoutOpt = 60.0,
    keep_crops: Annotated[
        bool, typer.Option("--keep-crops", help="Keep the face crops in OUT/crops/{input}/.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Also a Grad-CAM sheet of each input (OUT/sheet-{input}.png)."),
    ] = False,
) -> None:
    """Score videos and images with a detector: a score per frame and per input, with the data
    settings the checkpoint was trained with (sampling, crop, spaces). Exits 1 only when no input
    could be read; an input without a face gets a row saying so."""
    from ffx.apply.explain import explain as run_explain
    from ffx.apply.predict import predict as run_predict

    if explain:
        explained = run_explain(
            checkpoint,
            out,
            inputs=inputs,
            methods=("gradcam",),
            device=device,
            threshold=threshold,
            workers=workers,
            show_progress=console.is_terminal,
            stall_seconds=timeout,
        )
        report = explained.prediction
    else:
        report = run_predict(
            checkpoint,
            inputs,
            out,
            threshold=threshold,
            device=device,
            workers=workers,
            stall_seconds=timeout,
            show_progress=console.is_terminal,
            crops_dir=out / "crops" if keep_crops else None,
        )
    print_predictions(report)
    if explain:
        for sheet in explained.sheets:
            console.print(f"attention maps: {escape(str(sheet))}", highlight=False)
    console.print(f"predictions in {escape(str(out))} (frames.csv, inputs.csv, predictions.json)")
    if not report.readable:
        raise FfxError(f"none of the {len(report.inputs)} inputs could be read (see the table)")


def explain(
    checkpoint: CheckpointArg,
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Videos or images to explain (instead of --shards).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sheets, overlays and t-SNE.")] = Path(
        "explain"
    ),
    shards: Annotated[
        Path | None, typer.Option("--shards", help="BUILD/shards: explain samples of a split.")
    ] = None,
    split: SplitOpt = "test",
    per_class: Annotated[
        int, typer.Option("--per-class", min=1, help="Samples per class (per input with INPUTS).")
    ] = 8,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma list of gradcam, gradcam++, hirescam, layercam, xgradcam.")
    ] = "gradcam,gradcam++,hirescam,layercam,xgradcam",
    device: DeviceOpt = "auto",
) -> None:
    """What a detector looks at: class activation maps of the backbone's last stage over the face
    crops (a contact sheet per class, overlays per method) and, with --shards, a t-SNE of the
    backbone features (tsne.png, features.parquet)."""
    from ffx.apply.explain import explain as run_explain

    report = run_explain(
        checkpoint,
        out,
        shards=shards,
        split=split,
        inputs=inputs or (),
        per_class=per_class,
        methods=methods,
        device=device,
        show_progress=console.is_terminal,
    )
    console.print(
        f"explain: {report.samples} samples, overlays in {escape(str(out / 'cam'))}", highlight=False
    )
    for path in [*report.sheets, report.tsne, report.features]:
        if path is not None:
            console.print(f"  {escape(str(path))}", highlight=False)
