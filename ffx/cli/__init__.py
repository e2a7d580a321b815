"""The `ffx` command line: the typer app, its commands in `--help` order, and the one error boundary."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from ffx import __version__
from ffx.cli import apply, build, cluster, compare, demo, interop, train
from ffx.cli.common import console, error_console
from ffx.errors import FfxError, WorkerBug, os_error_line

app = typer.Typer(
    name="ffx",
    help="Reproducible face-forgery datasets: index, extract, crop, shard, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


# The order of `ffx --help`: a build's stages, its exchange with other tools, training, applying a
# detector, checking a build, the cluster, the recipes and the demo.
app.command(name="index")(build.index)
app.command(name="extract")(build.extract)
app.command(name="crop")(build.crop)
app.command(name="qa")(build.qa)
app.command(name="shard")(build.shard)
app.command(name="build")(build.build)
app.command(name="export")(interop.export)
app.command(name="import-crops")(interop.import_crops)
app.command(name="train")(train.train)
app.command(name="eval")(train.evaluate)
app.command(name="predict")(apply.predict)
app.command(name="explain")(apply.explain)
app.command(name="verify")(build.verify)
app.command(name="status")(build.status)
app.command(name="diff")(compare.diff)
app.command(name="slurm")(cluster.slurm)
app.command(name="recipes")(build.recipes)
app.command(name="demo")(demo.demo)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one red line for an FfxError (traceback with FFX_DEBUG=1), exit code back."""
    command = typer.main.get_command(app)
    try:
        # Standalone mode prints usage errors the click way and exits with their code.
        command.main(args=argv, prog_name="ffx", standalone_mode=True)
    except (FfxError, OSError) as error:
        # The CLI's one error boundary: a problem the user must act on is one line (exit 1); a file
        # that could not be read or written is named with what to do about it.
        if os.environ.get("FFX_DEBUG") == "1":
            if isinstance(error, WorkerBug):
                error_console.print(error.worker_traceback, markup=False, highlight=False)
            raise
        message = str(error) if isinstance(error, FfxError) else os_error_line(error)
        error_console.print(f"[bold red]ffx: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return error.exit_code if isinstance(error, FfxError) else 1
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
