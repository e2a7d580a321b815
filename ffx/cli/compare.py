"""`ffx diff`: what differs between two builds, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def diff(
    build_a: Annotated[Path, typer.Argument(help="A build directory.")],
    build_b: Annotated[Path, typer.Argument(help="The build directory to compare it with.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Examples per stage and reason.")] = 3,
) -> None:
    """Which videos, samples and shards differ between two builds, and why: input, setting, version
    or numerics only. Exit 0 only when the shards are identical."""
    from ffx.cli.reports import print_diff
    from ffx.pipeline.stages.diff import diff_builds

    result = diff_builds(build_a, build_b, examples)
    if as_json:
        print(json.dumps(result.as_json(), indent=2, default=str))
    else:
        print_diff(result, (str(build_a), str(build_b)))
    if not result.identical_shards:
        raise typer.Exit(1)
