"""Builds to and from other tools' forms: export (datalists, image folders, DeepfakeBench), import-crops."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ffx.cli.common import BuildArg, BuildOpt, console


def export(
    build: BuildArg,
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="mcx-api (path label) | lib (label,folder,nframes) | imagefolder | deepfakebench "
            "(its dataset JSON, crops, landmarks, masks).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the lists or the image folders.")],
    copy: Annotated[
        bool, typer.Option("--copy", help="imagefolder, deepfakebench: copy crops instead of linking.")
    ] = False,
    dfb_root: Annotated[
        Path | None,
        typer.Option("--dfb-root", help="deepfakebench: the folder DeepfakeBench runs from (default: here)."),
    ] = None,
    dfb_resolution: Annotated[
        int,
        typer.Option(
            "--dfb-resolution",
            min=8,
            help="deepfakebench: its `resolution` (the side its loader resizes images to); the "
            "landmarks are written for it.",
        ),
    ] = 256,
) -> None:
    """Datalists, image folders or a DeepfakeBench dataset JSON over the face crops."""
    from ffx.pipeline.stages.export import run_export

    report = run_export(
        build, export_format, out, copy=copy, dfb_root=dfb_root, dfb_resolution=dfb_resolution
    )
    per_split = ", ".join(f"{split} {count}" for split, count in sorted(report.crops.items()))
    console.print(f"export ({report.export_format}): {escape(per_split)} crops in {escape(str(report.out))}")
    if report.unlabelled:
        console.print(f"  [yellow]{report.unlabelled} crops of unlabelled videos left out[/]")
    for note in report.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    if report.config:
        console.print(f"DeepfakeBench config (also in {escape(str(report.out / 'deepfakebench.yaml'))}):")
        console.print(escape(report.config), highlight=False, end="")


def import_crops(
    source: Annotated[Path, typer.Argument(help="Folder of face crops (for deepfakebench: paths' root).")],
    build: BuildOpt,
    source_format: Annotated[
        str, typer.Option("--format", help="folders ([split/]label/video/*.png) | deepfakebench.")
    ] = "folders",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="deepfakebench: the dataset JSON (under SOURCE).")
    ] = None,
    compression: Annotated[
        str, typer.Option("--compression", help="deepfakebench, FF++ family: raw | c23 | c40.")
    ] = "c23",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split where none is given.")] = 0,
    dfb_resolution: Annotated[
        int,
        typer.Option(
            "--dfb-resolution",
            min=8,
            help="deepfakebench: the image side its landmarks were saved for (its preprocessing's "
            "crops, 256; an ffx export's --dfb-resolution).",
        ),
    ] = 256,
) -> None:
    """Face crops made elsewhere as a build that starts at `ffx shard` (no video needed)."""
    from ffx.pipeline.stages.import_crops import run_import

    report = run_import(
        source, build, source_format, json_file, compression, seed=seed, resolution=dfb_resolution
    )
    rows = ", ".join(f"{status} {count}" for status, count in sorted(report.rows_by_status.items()))
    splits = ", ".join(f"{split} {count}" for split, count in report.index.by_split.items())
    console.print(
        f"import-crops: {report.videos} videos ({escape(splits)}); "
        f"images {escape(rows)}; {report.crops} crops in {escape(str(build))}/faces",
        highlight=False,
    )
    for note in report.index.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")
    for key, error in report.failed[:20]:
        console.print(f"  [red]{escape(key)}[/]: {escape(error)}", highlight=False)
    if len(report.failed) > 20:
        console.print(f"  … and {len(report.failed) - 20} more (see faces.parquet)")
