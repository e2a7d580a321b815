"""The CLI reference page (`ffx/cli/reference.py`, rendered by the docs site) lists every command and
option of the real app, and names what lacks a help text."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from ffx.cli import app
from ffx.cli.reference import cli_reference, undocumented
from tests.assertions import help_text

# The commands `ffx --help` lists, in its order, written out by hand: a new command must be added
# here and so gets a reviewer's look at its reference section.
COMMANDS = [
    "index", "extract", "crop", "qa", "shard", "build", "export", "import-crops", "train", "eval",
    "predict", "explain", "verify", "status", "diff", "slurm", "recipes", "demo",
]  # fmt: skip


def test_every_command_has_a_section_in_help_order() -> None:
    sections = re.findall(r"^## `ffx ([a-z-]+)`$", cli_reference(app), flags=re.MULTILINE)
    assert sections == COMMANDS


def test_every_option_of_help_is_in_its_section() -> None:
    reference = cli_reference(app)
    for name in ("crop", "train", "slurm"):
        section = reference.split(f"## `ffx {name}`")[1].split("\n## ")[0]
        options = set(re.findall(r"(--[a-z][a-z-]+)", help_text(name)))
        listed = set(re.findall(r"`(--[a-z][a-z-]+)`", section))
        assert options - {"--help"} == listed, name


def test_a_flag_pair_names_its_default_side_and_an_unset_option_none() -> None:
    extract = cli_reference(app).split("## `ffx extract`")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0]: line for line in extract.splitlines() if line.startswith("| `")}
    assert rows["| `--timeout`"].endswith("| `60.0` |")
    assert rows["| `--keep-frames`, `--no-keep-frames`"].endswith("|  |")  # unset: the recipe decides
    assert rows["| `BUILD`"].endswith("| required |")


def test_the_shipped_app_is_fully_documented_and_a_gap_is_named() -> None:
    assert undocumented(app) == []
    toy = typer.Typer()

    @toy.command()
    def first(count: Annotated[int, typer.Option("--count")] = 1) -> None:
        """Documented command, undocumented option."""

    @toy.command()
    def second() -> None:
        pass

    assert undocumented(toy) == ["ffx first --count", "ffx second"]
