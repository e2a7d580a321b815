"""The `ffx` command line: parses options and calls the library; nothing else lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from ffx import __version__
from ffx.errors import FfxError

app = typer.Typer(
    name="ffx",
    help="Reproducible face-forgery datasets: index, extract, crop, shard, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
error_console = Console(stderr=True)

ManifestArg = Annotated[
    str,
    typer.Argument(help="A manifest TOML file, or the name of a recipe in manifests/ (see `ffx recipes`)."),
]
RootOpt = Annotated[Path, typer.Option("--root", help="Dataset root folder (never written into a recipe).")]
BuildOpt = Annotated[Path, typer.Option("--build", help="Build directory: every stage's tables go here.")]
BuildArg = Annotated[Path, typer.Argument(help="Build directory made by `ffx index`.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a manifest field: --set split.source=seeded (repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"ffx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """ffx: deepfake-detection datasets and the MCX-API detector, reproducibly."""


@app.command()
def index(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    splits: Annotated[
        Path | None,
        typer.Option("--splits", help="Folder with official split files (FF++ train/val/test.json)."),
    ] = None,
    sample: Annotated[str | None, typer.Option("--sample", help="Frame sampling, e.g. first:30.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the group-aware split.")] = None,
    assignments: SetOpt = None,
) -> None:
    """Scan a dataset into BUILD/videos.parquet (keys, labels, groups, splits)."""
    from ffx.pipeline.index import run_index
    from ffx.pipeline.manifest import load_manifest

    recipe = load_manifest(manifest, {"sampling": sample, "seed": seed}, assignments)
    report = run_index(recipe, root, build, splits)
    console.print(f"indexed [bold]{report.videos}[/] videos into {report.table_path}")
    console.print("  by split: " + ", ".join(f"{k} {v}" for k, v in report.by_split.items()))
    console.print("  by label: " + ", ".join(f"{k} {v}" for k, v in report.by_label.items()))
    for note in report.notes:
        console.print(f"  [yellow]note:[/] {note}")


@app.command()
def status(build: BuildArg) -> None:
    """Show items per stage and status."""
    from ffx.pipeline.status import build_status

    print_status(build_status(build), title=f"ffx build {build}")


@app.command()
def recipes() -> None:
    """List the checked-in recipes in manifests/."""
    from ffx.pipeline.manifest import load_manifest, recipe_names

    table = Table(title="recipes (use the name as MANIFEST)")
    table.add_column("name")
    table.add_column("layout")
    table.add_column("description")
    for name in recipe_names():
        recipe = load_manifest(name)
        table.add_row(name, recipe.layout.kind, recipe.description)
    console.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo writes data and build.")] = Path(
        "ffx-demo"
    ),
) -> None:
    """Run the pipeline on generated clips (CPU, seconds) and show the build status."""
    from ffx.demo import run_demo
    from ffx.pipeline.status import build_status

    report = run_demo(workdir)
    console.print(f"demo data: {report.data}  build: {report.build}")
    console.print(
        f"indexed {report.index.videos} videos: "
        + ", ".join(f"{k} {v}" for k, v in report.index.by_split.items())
    )
    print_status(build_status(report.build), title="demo build")


def print_status(statuses, title: str) -> None:
    """A rich table: one row per stage and status."""
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("status / split")
    table.add_column("rows", justify="right")
    table.add_column("items", justify="right")
    for stage in statuses:
        state = "" if stage.merged else " (in progress)"
        for position, (name, count) in enumerate(sorted(stage.counts.items())):
            first = position == 0
            table.add_row(
                stage.stage + state if first else "", name, str(count), str(stage.items) if first else ""
            )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one red line for an FfxError (traceback with FFX_DEBUG=1), exit code back."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="ffx", standalone_mode=False)
    except FfxError as error:
        if os.environ.get("FFX_DEBUG") == "1":
            raise
        error_console.print(f"[bold red]ffx: error:[/] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        error_console.print("[red]aborted[/]")
        return 130
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
