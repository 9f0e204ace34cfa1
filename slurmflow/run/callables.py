"""Stages that name a Python callable (`module:function`), submitted through submitit.

submitit pickles the call and gives the job its environment (`submitit.JobEnvironment`, its
result files). What it pickles is `slurmflow.job.task.call_stage(run_dir, node, index)`, which
composes the trial's config in the job and calls the user's function with it, so planning still
composes nothing per trial. The job gets the sbatch options a command stage gets (`sbatch.argv`:
resources, extra, dependency, job name, comment, checkpoint signal, log under <run>/logs/<node>/),
less the few submitit keeps to itself (SUBMITIT_OWNS and below).

submitit runs sbatch itself, on the machine slurmflow runs on: with a command prefix (`--via`),
callable stages go through the ordinary script instead, which calls the function the same way.
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.job.task import call_stage
from slurmflow.model import JobNode, Resources
from slurmflow.slurm import sbatch
from slurmflow.slurm.types import JobSpec
from slurmflow.slurm.units import time_hours

if TYPE_CHECKING:
    import submitit


def _minutes(time: str | None) -> int | None:
    hours = time_hours(time)  # None: unset or UNLIMITED, no limit to count down from
    return None if hours is None else max(1, math.ceil(hours * 60))


# What submitit keeps to itself; every other option is the command stage's, as sbatch.argv renders it.
# Dropped from ours (SUBMITIT_OWNS):
#   --parsable: submitit learns the job id from sbatch's usual answer ("Submitted batch job N").
# Written by submitit whatever its parameters say, so left as they are:
#   --nodes=1: a one-task job, which Slurm's default gives anyway.
#   --signal=USR2@90 when the stage has no checkpoint (with one, ours replaces it): for submitit's
#     preemption handler; without `B:` Slurm sends it to job steps only, and these jobs run none.
SUBMITIT_OWNS = frozenset({"parsable"})
# submitit keys its own options by its parameter names ('_') but open-mode with a '-': an option of
# ours must use the same key to replace its line rather than add a second one.
_HYPHENATED = frozenset({"open-mode"})
_OPPOSITES = {"requeue": "no-requeue", "no-requeue": "requeue"}


def _key(name: str) -> str:
    return name if name in _HYPHENATED else name.replace("-", "_")


def sbatch_options(spec: JobSpec) -> dict[str, str | bool]:
    """The options `sbatch.argv(spec)` gives a command stage, keyed as submitit's
    `additional_parameters`, which replace its own (`_make_sbatch_string`). Pure."""
    out: dict[str, str | bool] = {}
    for word in sbatch.argv(spec)[1:]:
        if not word.startswith("--"):
            raise ValueError(f"not an sbatch option: {word!r}")
        name, eq, value = word[2:].partition("=")
        if name in SUBMITIT_OWNS:
            continue
        if name in _OPPOSITES:  # the last of --requeue/--no-requeue wins on sbatch's command line
            out.pop(_key(_OPPOSITES[name]), None)
        out[_key(name)] = value if eq else True
    return out


def parameters(spec: JobSpec, node: JobNode, res: Resources, *, hold: bool) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for a node (pure): the command stage's sbatch options.
    The spec carries the stage's resources (as the planner set them); `res` is not read again."""
    options = sbatch_options(spec)
    if hold:
        options["hold"] = True
    if node.array and node.size == 1:
        # submitit submits one call as a plain job (its pickle is found by the job id, so it cannot
        # be an array): no --array, and the log is task 0's, where `slurmflow logs` looks.
        options.pop("array", None)
        if isinstance(options.get("output"), str):
            options["output"] = str(options["output"]).replace("%a", "0")
    return {
        "use_srun": False,  # one task per job: the batch step itself runs the function
        "stderr_to_stdout": True,  # no --error: stderr joins the --output log, as for command stages
        "wckey": None,  # submitit's default --wckey=submitit is no option a command stage gets
        # For submitit's own timeout bookkeeping (minutes); None drops its 5-minute default --time.
        "time": _minutes(spec.time),
        "array_parallelism": node.throttle or node.size,
        "additional_parameters": options,
    }


def executor(
    spec: JobSpec, node: JobNode, res: Resources, *, run_dir: Path, python: str, hold: bool
) -> submitit.SlurmExecutor:
    import submitit

    # `exec`: the batch shell becomes the Python process, as a command stage's script execs the task
    # wrapper, so a `B:` checkpoint signal reaches it instead of ending the shell and the job.
    ex = submitit.SlurmExecutor(folder=str(run_dir / "submitit" / node.key), python=f"exec {shlex.quote(python)}")
    ex.update_parameters(**parameters(spec, node, res, hold=hold))
    return ex


def submit(spec: JobSpec, node: JobNode, res: Resources, *, run_dir: Path, python: str, hold: bool) -> str:
    """Submit a callable node with submitit; return its (array) job id."""
    ex = executor(spec, node, res, run_dir=run_dir, python=python, hold=hold)
    # Before 23.02 slurmstepd does not create a missing --output directory (as SlurmCLI.submit).
    for directory in sbatch.log_dirs(spec):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    root = str(run_dir)
    if node.array and node.size > 1:
        n = node.size
        jobs = ex.map_array(call_stage, [root] * n, [node.key] * n, list(range(n)))
        return str(jobs[0].job_id).split("_", 1)[0]
    return str(ex.submit(call_stage, root, node.key, 0 if node.array else None).job_id)
