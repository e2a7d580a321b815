"""Running a build and its training on a Slurm cluster: slurm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ffx.cli.common import BuildOpt, ManifestArg, RootOpt, SetOpt, SplitsOpt, console
from ffx.errors import FfxError


def checked_train_args(text: str, build: Path, run: Path) -> tuple[str, ...]:
    """`--train-args` as the words the training job passes to `ffx train`, checked now the way
    `ffx train` parses them (unknown options, bad values), not when the job starts hours later."""
    import shlex

    import typer.main
    from typer.exceptions import TyperException

    try:
        words = tuple(shlex.split(text))
    except ValueError as error:
        raise FfxError(f"--train-args {text!r}: {error} (give the options as one quoted string)") from None
    from ffx.cli.train import train as train_command

    alone = typer.Typer()
    alone.command()(train_command)
    train = typer.main.get_command(alone)  # one command: the command itself, as `ffx train` parses
    given = ["--shards", str(Path(build) / "shards"), "--run", str(run), *words]
    try:
        train.make_context("ffx train", given, resilient_parsing=False)
    except TyperException as error:  # typer's own click: NoSuchOption, BadParameter, ...
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        raise FfxError(f"--train-args: {message}") from None
    return words


def slurm(
    manifest: ManifestArg,
    root: RootOpt,
    build: BuildOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sbatch scripts and submit.sh.")],
    splits: SplitsOpt = None,
    assignments: SetOpt = None,
    tasks: Annotated[
        str, typer.Option("--tasks", help="Array tasks per stage: N, or extract=32,crop=8,shard=16.")
    ] = "1",
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Cores per stage task.")] = 4,
    mem: Annotated[str, typer.Option("--mem", help="Memory per stage task (Slurm's form: 8G).")] = "8G",
    time_limit: Annotated[
        str, typer.Option("--time", help="Time limit per stage task (HH:MM:SS or D-HH:MM:SS).")
    ] = "04:00:00",
    crop_gres: Annotated[
        str | None, typer.Option("--crop-gres", help="Generic resources of a crop task, e.g. gpu:1.")
    ] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Slurm account.")] = None,
    logs: Annotated[
        Path | None, typer.Option("--logs", help="Folder of the task logs (default: OUT/logs).")
    ] = None,
    setup: Annotated[
        str, typer.Option("--setup", help="Shell lines run first in every job, e.g. 'module load cuda'.")
    ] = "",
    requeue: Annotated[
        bool, typer.Option("--requeue/--no-requeue", help="Let Slurm requeue a task after a node failure.")
    ] = False,
    run: Annotated[
        Path | None, typer.Option("--run", help="Also train on the shards into this run folder.")
    ] = None,
    train_args: Annotated[
        str, typer.Option("--train-args", help="Options of `ffx train`, quoted as one string.")
    ] = "",
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Training nodes.")] = 1,
    procs_per_node: Annotated[
        int, typer.Option("--procs-per-node", min=1, help="Training processes per node (one per GPU).")
    ] = 1,
    train_cpus: Annotated[int, typer.Option("--train-cpus", min=1, help="Cores per training node.")] = 8,
    train_mem: Annotated[str, typer.Option("--train-mem", help="Memory per training node.")] = "32G",
    train_time: Annotated[str, typer.Option("--train-time", help="Time limit of training.")] = "24:00:00",
    train_gres: Annotated[
        str | None, typer.Option("--train-gres", help="Generic resources per training node, e.g. gpu:4.")
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Submit the jobs now (sbatch), each after the one before.")
    ] = False,
) -> None:
    """Write the sbatch scripts of a build (an array job per stage) and of training; --submit sends them."""
    from ffx.cluster.slurm import Resources, Training, parse_tasks, submit_jobs, write_slurm_jobs

    resources = Resources(cpus=cpus, mem=mem, time=time_limit)
    training = None
    if train_args and run is None:
        raise FfxError("--train-args needs --run (the folder the training job writes its run to)")
    if run is not None:
        training = Training(
            run=run,
            args=checked_train_args(train_args, build, run),
            nodes=nodes,
            procs_per_node=procs_per_node,
            resources=Resources(cpus=train_cpus, mem=train_mem, time=train_time, gres=train_gres),
        )
    jobs = write_slurm_jobs(
        manifest,
        root,
        build,
        out,
        splits=splits,
        assignments=assignments or (),
        tasks=parse_tasks(tasks),
        resources=resources,
        stage_resources={"crop": Resources(cpus=cpus, mem=mem, time=time_limit, gres=crop_gres)},
        training=training,
        partition=partition,
        account=account,
        logs=logs,
        setup=setup,
        requeue=requeue,
    )
    names = ", ".join(path.name for path in jobs.scripts.values())
    folder = escape(str(jobs.folder))
    console.print(f"slurm: wrote {names} and {jobs.submit.name} in {folder}", highlight=False)
    if not submit:
        console.print(f"  submit them with: bash {escape(str(jobs.submit))}", highlight=False)
        return
    ids = submit_jobs(jobs)
    console.print(
        "submitted: " + ", ".join(f"{name} {job_id}" for name, job_id in ids.items()), highlight=False
    )
    console.print(f"  logs: {escape(str(jobs.logs))}; `squeue --me` shows them", highlight=False)
