"""What every command group shares: the consoles, the option aliases, the warning line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

# Long paths and errors stay on one line in logs; `:name:` in a file name stays text, not an emoji.
console = Console(soft_wrap=True, emoji=False)
error_console = Console(stderr=True, emoji=False)

ManifestArg = Annotated[
    str,
    typer.Argument(help="A manifest TOML file, or the name of a recipe in manifests/ (see `ffx recipes`)."),
]
RootOpt = Annotated[Path, typer.Option("--root", help="Dataset root folder (never written into a recipe).")]
MovedRootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Dataset root, if it is mounted elsewhere than where `ffx index` saw it."),
]
BuildOpt = Annotated[Path, typer.Option("--build", help="Build directory: every stage's tables go here.")]
BuildArg = Annotated[Path, typer.Argument(help="Build directory made by `ffx index`.")]
SplitsOpt = Annotated[
    Path | None,
    typer.Option("--splits", help="Folder with official split files (FF++ train/val/test.json)."),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Fingerprint input videos by sha256 in build.json (reads them all).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a manifest field: --set split.source=seeded (repeatable)."),
]
PartOpt = Annotated[
    str | None,
    typer.Option("--part", help="Do part i of n (e.g. 0/4); default: SLURM_ARRAY_TASK_ID/COUNT, else all."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, help="Worker processes (default: all cores).")
]
FailOpt = Annotated[
    bool,
    typer.Option("--fail-on-error", help="Exit 1 if any video failed or gave no output (listed at the end)."),
]
CheckpointArg = Annotated[Path, typer.Argument(help="A .safetensors file written by ffx train.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=1, help="Seconds without a decoded frame before a decoder counts as hung."),
]
SplitOpt = Annotated[str, typer.Option("--split", help="train | val | test.")]


def warn(text: str) -> None:
    """A warning from the library: one yellow line on stderr."""
    error_console.print(f"[yellow]ffx: warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
