"""Printing the library's reports: stage and build summaries, status, evaluation, predictions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from ffx.cli.common import console

if TYPE_CHECKING:  # the library's reports, named for the type hints alone: nothing heavy is imported
    from ffx.apply.predict import PredictReport
    from ffx.pipeline.engine.stage import StageReport
    from ffx.pipeline.stages.build import BuildReport
    from ffx.pipeline.stages.diff import BuildDiff
    from ffx.pipeline.stages.status import StageStatus


def print_stage_report(report: StageReport) -> None:
    """One line of counts, the failed videos (at most 20), shards per split, and whether the
    table is merged. Every name from the build is escaped: rich markup in a file name stays text."""
    from ffx.pipeline.engine.registry import command_of

    items = ", ".join(f"{status} {count}" for status, count in sorted(report.items_by_status.items()))
    rows = ", ".join(f"{status} {count}" for status, count in sorted(report.rows_by_status.items()))
    figures = "".join(f"; {count} {name}" for name, count in sorted(report.counts.items()))
    changed = f" ({report.redone} redone: their inputs or settings changed)" if report.redone else ""
    dropped = f"; {report.dropped} no longer indexed, removed" if report.dropped else ""
    console.print(
        f"{command_of(report.stage).split()[-1]}: {report.items} videos in this part, "
        f"{report.skipped} already current{changed}; "
        f"this run: videos {escape(items) or 'none'}; {report.unit} {escape(rows) or 'none'} "
        f"({report.outputs} {report.made}){figures} in {report.seconds:.1f} s{dropped}",
        highlight=False,
    )
    for key, status, error in report.failed[:20]:
        console.print(f"  [red]{escape(status)}[/] {escape(key)}: {escape(error)}", highlight=False)
    if len(report.failed) > 20:
        console.print(f"  … and {len(report.failed) - 20} more (see `ffx status`)")
    if not report.merged:
        console.print("  table not merged yet: other parts are still missing (run again when they finish)")
    index = report.extra.get("index")
    if index:
        for split, totals in index["splits"].items():
            shards, samples, megabytes = totals["shards"], totals["samples"], totals["bytes"] / 1e6
            console.print(f"  {escape(split)}: {shards} shards, {samples} samples, {megabytes:.1f} MB")


def print_build_report(report: BuildReport) -> None:
    """Every stage's summary, then what the build waits for, if anything."""
    by_split = ", ".join(f"{name} {count}" for name, count in report.index.by_split.items())
    console.print(f"index: {report.index.videos} videos: {escape(by_split)}")
    for stage in report.stages:
        print_stage_report(stage)
    if report.waiting:
        console.print(
            f"[yellow]waiting:[/] other parts have not finished {report.waiting}; "
            "run the same command again once they have"
        )


def print_status(statuses: list[StageStatus], title: str) -> None:
    """A rich table: one row per stage and status, with videos and rows (frames, faces)."""
    table = Table(title=escape(title))
    table.add_column("stage")
    table.add_column("status / split")
    table.add_column("videos", justify="right")
    table.add_column("rows", justify="right")
    for stage in statuses:
        state = "" if stage.merged else " (in progress)"
        for position, (name, count) in enumerate(sorted(stage.items.items())):
            label = stage.stage + state if position == 0 else ""
            table.add_row(label, escape(name), str(count), str(stage.rows[name]))
        if len(stage.items) > 1:
            table.add_row("", "[bold]total", str(stage.videos), str(sum(stage.rows.values())))
        currency = stage.currency
        if currency is not None and not currency.ok:
            for what, count in (
                ("[yellow]stale[/] (inputs or settings changed)", currency.stale),
                ("[yellow]not done[/]", currency.missing),
                ("[yellow]no longer indexed[/]", currency.gone),
            ):
                if count:
                    table.add_row("", what, str(count), "")
            if currency.upstream:
                table.add_row("", "[yellow]waits for an upstream stage[/]", "", "")
    console.print(table)
    for stage in statuses:
        if stage.damaged:
            console.print(
                f"[yellow]damaged:[/] {stage.damaged} ledger chunks of {escape(stage.stage)} could not "
                f"be read; set aside in damaged/{escape(stage.stage)}/ (at the latest by the stage's "
                "next run), their videos are made again"
            )
    stale = [stage for stage in statuses if stage.currency is not None and not stage.currency.ok]
    if stale:
        console.print(
            f"[yellow]out of date:[/] {', '.join(stage.stage for stage in stale)}; each stage's command "
            "(ffx extract, crop, shard BUILD) brings them up to date, or "
            "`ffx build BUILD/manifest.toml --root ROOT --build BUILD` (the build's own recipe)"
        )
        reason = next((stage.currency.upstream for stage in stale if stage.currency.upstream), "")
        if reason:
            console.print(f"  why: {escape(reason)}", highlight=False)


def print_predictions(report: PredictReport) -> None:
    """One row per input (its file name: the full paths are in the CSV files): its status, frames,
    faces scored, mean score, label and, where it has no score, why."""
    table = Table(title=escape(f"ffx predict: {report.checkpoint}"))
    for column in ("input", "status", "frames", "faces", "score", "label", "why"):
        table.add_column(column, justify="right" if column in ("frames", "faces", "score") else "left")
    names = Counter(Path(row["input"]).name for row in report.inputs)
    for row in report.inputs:
        name = Path(row["input"]).name
        table.add_row(
            escape(name if names[name] == 1 else row["input"]),  # the path where names repeat
            escape(row["status"]),
            str(row["frames"]),
            str(row["faces"]),
            _figure(row["score"]),
            row["label"] or "-",
            escape(row["error"]),
        )
    console.print(table)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_eval(metrics: dict) -> None:
    """A rich table (a row per build, subset and level), the notes, and the summary line."""
    table = Table(title=escape(f"ffx eval {metrics['split']}: {metrics['checkpoint']}"))
    for name in ("dataset", "subset", "level", "real", "fake", "BOSC", "AUC", "ACC", "EER", "AP"):
        table.add_column(name, justify="left" if name in ("dataset", "subset", "level") else "right")
    sections = [
        row
        for name, values in metrics["datasets"].items()
        for row in [(name, "all", values["pooled"])]
        + [(name, f"real vs {method}", subset) for method, subset in values["methods"].items()]
    ]
    if len(metrics["datasets"]) > 1:
        sections.append(("all builds", "all", metrics["pooled"]))
    shown = None
    for dataset, subset, levels in sections:
        for level in ("frame", "video"):
            values = levels[level]
            table.add_row(
                escape(dataset) if dataset != shown else "",
                escape(subset) if level == "frame" else "",
                level,
                str(values["real"]),
                str(values["fake"]),
                *(_figure(values[key]) for key in ("bosc", "auc", "acc", "eer", "ap")),
            )
            shown = dataset
    if console.is_terminal:
        console.print(table)
    else:  # in a log the table is as wide as it needs: no name or figure is cut short
        needed = Measurement.get(console, console.options.update_width(1000), table).maximum
        Console(file=console.file, width=max(console.width, needed), emoji=False).print(table)
    for note in metrics["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    checkpoint, split = Path(metrics["checkpoint"]), metrics["split"]
    written = metrics.get("out") or str(checkpoint.with_name(f"{checkpoint.stem}.eval-{split}.json"))
    console.print(
        f"eval {escape(split)}: frames {metrics['frames']}, videos {metrics['videos']}; "
        f"frame BOSC {_figure(metrics['frame_bosc'])} AUC {_figure(metrics['frame_auc'])}; "
        f"video BOSC {_figure(metrics['video_bosc'])} AUC {_figure(metrics['video_auc'])}; "
        f"written to {escape(written)}",
        highlight=False,
    )


def print_diff(result: BuildDiff, names: tuple[str, str]) -> None:
    """The recipe fields and versions that differ, a table of the videos that differ per stage and
    reason with examples, and whether the shards are identical."""
    for field, a, b in result.settings:
        console.print(f"setting {escape(field)}: {escape(repr(a))} in A, {escape(repr(b))} in B")
    for name, (a, b) in result.versions.items():
        console.print(f"version of {escape(name)}: {escape(a)} in A, {escape(b)} in B")
    for stage, (a, b) in result.machines.items():
        console.print(f"{escape(stage)} ran on {escape(a)} in A, {escape(b)} in B")
    table = Table(title=escape(f"ffx diff A={names[0]} B={names[1]}"))
    for column in ("stage", "videos compared", "differ because", "videos", "for example"):
        table.add_column(column, justify="right" if column.startswith("videos") else "left")
    for stage in result.stages:
        if not stage.counts:
            table.add_row(stage.stage, str(stage.videos), "[green]identical[/]", "0", "")
        for position, (reason, count) in enumerate(sorted(stage.counts.items())):
            examples = "\n".join(escape(example) for example in stage.examples.get(reason, []))
            first = position == 0
            table.add_row(
                stage.stage if first else "", str(stage.videos) if first else "", reason, str(count), examples
            )
    console.print(table)
    shards = result.shards
    verdict = "[green]identical[/]" if result.identical_shards else "[red]differ[/]"
    console.print(
        f"shards {verdict}: {shards['same']} the same, {shards['differ']} with other bytes, "
        f"{shards['only in A']} only in A, {shards['only in B']} only in B"
    )
