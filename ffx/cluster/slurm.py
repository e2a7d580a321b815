"""Slurm batch scripts for a whole build and its training, written so users need not write them.

`write_slurm_jobs` writes one sbatch script per stage (`ffx index` as one task, then `ffx extract`,
`ffx crop` and `ffx shard` as array jobs: task i does part i of n, and whichever task finishes a
stage's last item merges its table), optionally a training script (`srun` starts one `torchrun`
per allocated node, joined by the c10d rendezvous on the first node), and `submit.sh`, which
submits them in order, each after the previous one succeeded (`afterok`, and
`--kill-on-invalid-dep=yes` so a failed stage cancels the rest instead of leaving it pending
forever). `submit_jobs` runs submit.sh and returns the job ids; `wait_for_jobs` follows them.

A failed task is redone by submitting its script again (the whole array, or `--array=I` for task I
alone): parts resume, doing only what is missing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ffx.errors import FfxError

SUBMIT_SCRIPT = "submit.sh"
# Job states after which a job never runs again (squeue's long names).
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)

_MEMORY = re.compile(r"^\d+[KMGT]?$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")  # MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM:SS
_WORD = re.compile(r"^[\w.,:+=-]+$")  # partition, gres, account: one #SBATCH word, no spaces


@dataclass(frozen=True)
class Resources:
    """What each task of a job asks Slurm for: cores, memory (`4G`), time limit (`HH:MM:SS`,
    `D-HH:MM:SS`) and generic resources (`gpu:1`)."""

    cpus: int = 4
    mem: str = "8G"
    time: str = "04:00:00"
    gres: str | None = None


@dataclass(frozen=True)
class Training:
    """A training job after the build: `ffx train --shards BUILD/shards --run RUN` plus `args`,
    on `nodes` nodes with `procs_per_node` processes each (one per GPU, or gloo processes on CPUs);
    `resources.cpus` are a node's cores for all its processes."""

    run: Path
    args: tuple[str, ...] = ()
    nodes: int = 1
    procs_per_node: int = 1
    resources: Resources = field(default_factory=lambda: Resources(cpus=8, mem="32G", time="24:00:00"))


@dataclass(frozen=True)
class SlurmJobs:
    """The scripts `write_slurm_jobs` wrote: one per job in submission order, submit.sh, the log
    folder, and the array size of each stage."""

    folder: Path
    scripts: dict[str, Path]
    submit: Path
    logs: Path
    tasks: dict[str, int]

    def task_logs(self, job_ids: Mapping[str, str]) -> list[Path]:
        """The log file of every task of the submitted jobs `job_ids` (name -> id)."""
        logs = []
        for name, job_id in job_ids.items():
            if name in self.tasks:  # an array: one log per task
                logs += [self.logs / f"{name}-{job_id}_{task}.out" for task in range(self.tasks[name])]
            else:
                logs.append(self.logs / f"{name}-{job_id}.out")
        return logs


def array_stages(reading_videos: bool = False) -> tuple[str, ...]:
    """The stages run as arrays of parts after `ffx index` (extract, crop, shard): the registry's
    (only those that read the videos, with `reading_videos`)."""
    import ffx.pipeline.stages  # noqa: F401  (the stages register themselves)
    from ffx.pipeline.engine.registry import array_stages as registered

    return registered(reading_videos)


def parse_tasks(text: str) -> dict[str, int]:
    """Array sizes from `N` (every stage) or `extract=32,crop=8,shard=16` (stages left out: 1)."""
    text, stages = text.strip(), array_stages()
    if re.fullmatch(r"\d+", text):
        sizes = dict.fromkeys(stages, int(text))
    else:
        sizes = dict.fromkeys(stages, 1)
        for item in text.split(","):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in stages or not re.fullmatch(r"\s*\d+\s*", value):
                raise FfxError(
                    f"--tasks {text!r}: expected N, or STAGE=N items for the stages "
                    f"{', '.join(stages)} (e.g. extract=32,crop=8,shard=16)"
                )
            sizes[name] = int(value)
    for name, size in sizes.items():
        if size < 1:
            raise FfxError(f"--tasks {text!r}: {name} needs at least 1 task")
    return sizes


def _check_resources(resources: Resources, what: str) -> None:
    """One line naming the setting that sbatch would refuse, before any file is written."""
    if resources.cpus < 1:
        raise FfxError(f"{what}: cpus must be at least 1, got {resources.cpus}")
    if not _MEMORY.match(resources.mem):
        raise FfxError(f"{what}: memory {resources.mem!r} is not Slurm's form; give e.g. 8G or 4000M")
    if not _TIME.match(resources.time):
        raise FfxError(f"{what}: time {resources.time!r} is not Slurm's form; give HH:MM:SS or D-HH:MM:SS")
    if resources.gres is not None and not _WORD.match(resources.gres):
        raise FfxError(f"{what}: gres {resources.gres!r} is not one word; give e.g. gpu:1")


def _installed(program: str) -> str:
    """The absolute path of `program` beside this Python (the environment ffx runs from), else on PATH:
    batch jobs start in a fresh shell that may not have the environment activated."""
    beside = Path(sys.executable).with_name(program)
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which(program)
    if found is None:
        raise FfxError(
            f"{program} not found beside {sys.executable} or on PATH; install ffx in this environment"
        )
    return str(Path(found).absolute())


def _header(name: str, log: str, resources: Resources, common: Sequence[str], lines: Sequence[str]) -> str:
    """The #SBATCH block: job name, log, cores, memory, time, gres, then the shared lines."""
    # sbatch reads double quotes in #SBATCH lines: a folder name may hold spaces.
    directives = [f"--job-name=ffx-{name}", f'--output="{log}"', *lines]
    directives += [f"--cpus-per-task={resources.cpus}", f"--mem={resources.mem}", f"--time={resources.time}"]
    if resources.gres:
        directives.append(f"--gres={resources.gres}")
    return "\n".join(f"#SBATCH {directive}" for directive in [*directives, *common])


def _script(summary: str, header: str, setup: str, body: str) -> str:
    lines = ["#!/bin/bash", f"# {summary} (written by `ffx slurm`)", header, "set -euo pipefail"]
    lines += [setup.strip()] if setup.strip() else []
    # Where and on how many cores (the task's affinity mask) each task ran, first in its log.
    lines.append(
        'echo "$SLURM_JOB_NAME job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ task $SLURM_ARRAY_TASK_ID}'
        ' on $(hostname -s), $(nproc) cores, $(date -Is)"'
    )
    return "\n".join([*lines, body]) + "\n"


def write_slurm_jobs(
    manifest: str,
    root: Path,
    build: Path,
    out: Path,
    *,
    splits: Path | None = None,
    assignments: Sequence[str] = (),
    tasks: Mapping[str, int] | None = None,
    resources: Resources | None = None,
    stage_resources: Mapping[str, Resources] | None = None,
    training: Training | None = None,
    partition: str | None = None,
    account: str | None = None,
    logs: Path | None = None,
    setup: str = "",
    requeue: bool = False,
) -> SlurmJobs:
    """Write the sbatch scripts of a build of `manifest` over `root` into `build` (and of a training
    run on its shards when `training` is given) into `out`, with submit.sh to chain them.

    `tasks`: array size per stage (default 1); `resources`: what each task asks for, per stage in
    `stage_resources` (e.g. a GPU for crop); `logs`: one file per task (default OUT/logs); `setup`:
    shell lines run first in every job (`module load …`); `assignments`: `--set` overrides for
    `ffx index`. Paths are written absolute, so the scripts work from any folder."""
    arrays, reading = array_stages(), array_stages(reading_videos=True)
    sizes = dict.fromkeys(arrays, 1) | dict(tasks or {})
    default = resources or Resources()
    per_stage = {stage: (stage_resources or {}).get(stage, default) for stage in ("index", *arrays)}
    _check_jobs(arrays, sizes, per_stage, {"partition": partition, "account": account}, training)

    out, build, root = Path(out).absolute(), Path(build).absolute(), Path(root).absolute()
    logs = Path(logs).absolute() if logs is not None else out / "logs"
    ffx = _installed("ffx")
    for folder in (out, logs):
        if '"' in str(folder) or "\n" in str(folder):
            raise FfxError(
                f"{folder}: a folder named with a double quote or a line break cannot be written in #SBATCH"
            )
    common = [f'--chdir="{out}"', "--kill-on-invalid-dep=yes"]
    # Slurm requeues a batch job after a node failure by default; a requeued part on another host
    # would find the lock of the lost run (taken over only on its own host). Off: a failed part
    # cancels the stages after it, and resubmitting its script finishes what is missing.
    common.append("--requeue" if requeue else "--no-requeue")
    if partition:
        common.append(f"--partition={partition}")
    if account:
        common.append(f"--account={account}")

    manifest_arg = str(Path(manifest).absolute()) if Path(manifest).is_file() else manifest
    index_command = [ffx, "index", manifest_arg, "--root", str(root), "--build", str(build)]
    if splits is not None:
        index_command += ["--splits", str(Path(splits).absolute())]
    for assignment in assignments:
        index_command += ["--set", assignment]

    scripts: dict[str, str] = {
        "index": _script(
            f"ffx index of {manifest} into {build}",
            _header("index", f"{logs}/index-%j.out", per_stage["index"], common, ["--ntasks=1"]),
            setup,
            f"exec {shlex.join(index_command)}",
        )
    }
    for stage in arrays:
        count = sizes[stage]
        # The part count is written here, not read from SLURM_ARRAY_TASK_COUNT: that is the size of
        # this submission, so resubmitting task 2 alone (--array=2) would otherwise do part 0 of 1,
        # the whole stage. The task id is the part (arrays start at 0; SLURM_ARRAY_TASK_MIN unused).
        command = [ffx, stage, str(build)]
        if stage in reading:  # the compute nodes' mount of the dataset, as given
            command += ["--root", str(root)]
        body = f'exec {shlex.join(command)} --part "$SLURM_ARRAY_TASK_ID/{count}"'
        lines = ["--ntasks=1", f"--array=0-{count - 1}"]
        scripts[stage] = _script(
            f"ffx {stage} of {build} as {count} array tasks: task i does part i/{count}",
            _header(stage, f"{logs}/{stage}-%A_%a.out", per_stage[stage], common, lines),
            setup,
            body,
        )
    if training is not None:
        scripts["train"] = _training_script(training, build, logs, common, setup, ffx)

    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in scripts.items():
        written[name] = out / f"{name}.sbatch"
        written[name].write_text(text, encoding="utf-8")
    submit = out / SUBMIT_SCRIPT
    submit.write_text(_submit_script(list(scripts)), encoding="utf-8")
    submit.chmod(0o755)
    return SlurmJobs(out, written, submit, logs, sizes)


def _check_jobs(
    arrays: Sequence[str],
    sizes: Mapping[str, int],
    per_stage: Mapping[str, Resources],
    words: Mapping[str, str | None],
    training: Training | None,
) -> None:
    """One line naming the first setting sbatch would refuse, before any file is written."""
    for stage, size in sizes.items():
        if stage not in arrays or size < 1:
            raise FfxError(f"array size {stage}={size}: give at least 1 task to each of {', '.join(arrays)}")
    for stage, wanted in per_stage.items():
        _check_resources(wanted, f"{stage} job")
    for label, value in words.items():
        if value is not None and not _WORD.match(value):
            raise FfxError(f"--{label} {value!r} is not one word")
    if training is not None:
        _check_training(training)


def _check_training(training: Training) -> None:
    if training.nodes < 1 or training.procs_per_node < 1:
        raise FfxError(
            f"training needs at least 1 node and 1 process per node, got {training.nodes} and "
            f"{training.procs_per_node}"
        )
    _check_resources(training.resources, "train job")
    for argument in training.args:
        name = argument.split("=", 1)[0]
        if name in ("--shards", "--run", "--resume"):
            raise FfxError(
                f"--train-args: {name} is set by `ffx slurm` (the build's shards, --run, and --resume "
                "when the run has a checkpoint); leave it out"
            )


def _training_script(
    training: Training, build: Path, logs: Path, common: Sequence[str], setup: str, ffx: str
) -> str:
    """srun starts one torchrun a node; they meet at a c10d store on the first node of the job."""
    run = Path(training.run).absolute()
    torchrun = _installed("torchrun")
    train = [ffx, "train", "--shards", str(build / "shards"), "--run", str(run), *training.args]
    lines = [f"--nodes={training.nodes}", "--ntasks-per-node=1"]
    header = _header("train", f"{logs}/train-%j.out", training.resources, common, lines)
    body = f"""head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# A port of its own per job: two training jobs may share a node.
port=$((20000 + SLURM_JOB_ID % 20000))
# Submitted again after a stop, the run resumes from its last checkpoint.
resume=()
if [[ -f {shlex.quote(str(run / "last.safetensors"))} ]]; then resume=(--resume); fi
# torchrun gives each process 1 thread unless told: share the node's cores among its processes.
threads=$((SLURM_CPUS_PER_TASK / {training.procs_per_node}))
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-$((threads > 0 ? threads : 1))}}
# srun is given the cores per task: since Slurm 22.05 it no longer takes --cpus-per-task from sbatch,
# and a step of one core would bind every process of the node to it.
srun --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" --kill-on-bad-exit=1 \\
  {shlex.quote(torchrun)} --nnodes="$SLURM_NNODES" --nproc-per-node={training.procs_per_node} \\
  --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$head:$port" \\
  --no-python -- {shlex.join(train)} "${{resume[@]}}\""""
    summary = (
        f"ffx train on {build / 'shards'} into {run}: {training.nodes} node(s) x "
        f"{training.procs_per_node} process(es) under torchrun"
    )
    return _script(summary, header, setup, body)


def _submit_script(names: Sequence[str]) -> str:
    """sbatch each job after the one before; print `name id` per job (the ids `submit_jobs` reads)."""
    lines = [
        "#!/bin/bash",
        "# Submits the jobs in order, each when the one before has succeeded (written by `ffx slurm`).",
        "# `sbatch --parsable` prints ID, or ID;CLUSTER on a federation: the ID is kept.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    previous = ""
    for name in names:
        lines += [f"{name}=$(sbatch --parsable {previous}{name}.sbatch)", f"{name}=${{{name}%%;*}}"]
        lines.append(f'echo "{name} ${name}"')
        previous = f'--dependency=afterok:"${name}" --kill-on-invalid-dep=yes '
    return "\n".join(lines) + "\n"


def submit_jobs(jobs: SlurmJobs) -> dict[str, str]:
    """Run submit.sh; the job id of each script, in submission order."""
    if shutil.which("sbatch") is None:
        raise FfxError(
            f"sbatch not found: submit {jobs.submit} on a Slurm login node (or bring up a test "
            "cluster: bash scripts/slurm-cluster.sh up)"
        )
    done = subprocess.run(["bash", str(jobs.submit)], capture_output=True, text=True, check=False)
    ids = {}
    for line in done.stdout.splitlines():
        name, _, job_id = line.partition(" ")
        if name in jobs.scripts and job_id.isdigit():
            ids[name] = job_id
    if done.returncode != 0 or list(ids) != list(jobs.scripts):
        said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        submitted = ", ".join(f"{name} {job_id}" for name, job_id in ids.items()) or "none"
        raise FfxError(f"{jobs.submit} failed: {said[-1]} (submitted: {submitted})")
    return ids


def _queue(job_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(task id, state) of every task of the jobs, finished ones too while Slurm remembers them."""
    command = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i %T"]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env=os.environ | {"LC_ALL": "C"}
    )
    if done.returncode != 0:
        raise FfxError(f"squeue failed: {(done.stderr.strip() or 'no message').splitlines()[-1]}")
    return [tuple(line.split()[:2]) for line in done.stdout.splitlines() if len(line.split()) >= 2]


def wait_for_jobs(job_ids: Mapping[str, str], timeout: float, poll: float = 2.0) -> dict[str, str]:
    """Wait until every task of the jobs has finished; each task's final state ("12_0":
    "COMPLETED"). States are collected while polling: Slurm forgets finished jobs after a while
    (MinJobAge), a long chain would lose its first ones. Raises FfxError after `timeout` seconds."""
    ids = list(job_ids.values())
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        current = dict(_queue(ids))
        # "12_[1-2]" stands for array tasks not started yet; it goes once they are split off (or
        # stays, CANCELLED, when a failed dependency cancels the whole array).
        states = {task: state for task, state in states.items() if "[" not in task} | current
        every_job = {task.split("_")[0] for task in states} == set(ids)
        if every_job and set(states.values()) <= FINAL_STATES:
            return states
        if time.monotonic() > deadline:
            waiting = ", ".join(
                f"{task} {state}" for task, state in states.items() if state not in FINAL_STATES
            )
            raise FfxError(f"Slurm jobs {', '.join(ids)} not finished after {timeout:.0f} s: {waiting}")
        time.sleep(poll)
