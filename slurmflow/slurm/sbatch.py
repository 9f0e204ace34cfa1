"""JobSpec -> sbatch argv and batch script text. Pure: no I/O, no job ids invented here.

Every option goes on argv (a list, never a shell line); values that land in the script are
quoted with shlex.quote. Options on the command line override `#SBATCH` lines in a script
(man sbatch), so a user's script cannot undo what the plan decided.
"""

from __future__ import annotations

import os
import re
import shlex

from slurmflow.errors import UsageError
from slurmflow.slurm import units
from slurmflow.slurm.types import Dependency, DepKind, JobSpec

_JOB_ID = re.compile(r"^\d+(_\d+)?\Z", re.ASCII)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
_NAME = re.compile(r"^[A-Za-z0-9_.+@:-][A-Za-z0-9_.+@:=,-]*\Z", re.ASCII)


def render_dependency(dep: Dependency) -> str:
    """Dependency -> the --dependency value: clauses joined by ',' (all) or '?' (any)."""
    parts: list[str] = []
    for clause in dep.clauses:
        if clause.kind is DepKind.SINGLETON:
            parts.append("singleton")
            continue
        for job_id in clause.job_ids:
            if not _JOB_ID.match(job_id):
                raise ValueError(f"not a Slurm job id: {job_id!r}")
        parts.append(":".join((clause.kind.value, *clause.job_ids)))
    return ("?" if dep.any_of else ",").join(parts)


def render_script(spec: JobSpec) -> str:
    """The batch script: a shebang, the job's environment (quoted) and the body as given."""
    lines = ["#!/bin/bash"]
    for key, value in sorted(spec.env.items()):
        if not _ENV_NAME.match(key):
            raise UsageError(f"environment variable name {key!r} is not valid: use letters, digits and _")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(spec.script.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _checked(what: str, value: str, pattern: re.Pattern[str], hint: str) -> str:
    if not pattern.match(value):
        raise UsageError(f"{what} {value!r} is not valid: {hint}")
    return value


def argv(spec: JobSpec, script_path: str | None = None) -> list[str]:
    """The sbatch command line. With no script_path the script is read from standard input."""
    out = [
        "sbatch",
        "--parsable",
        f"--job-name={_checked('job name', spec.name, _NAME, 'use letters, digits, . _ - + @ :')}",
    ]
    if spec.partition:
        out.append(f"--partition={spec.partition}")
    if spec.account:
        out.append(f"--account={spec.account}")
    if spec.qos:
        out.append(f"--qos={spec.qos}")
    if spec.gpus_per_task:
        if spec.gpus_per_task < 0:
            raise UsageError("gpus must be >= 0")
        out.append(f"--gres=gpu:{spec.gpus_per_task}")
    if spec.cpus_per_task:
        out.append(f"--cpus-per-task={spec.cpus_per_task}")
    if spec.mem:
        out.append(f"--mem={units.memory(spec.mem, 'mem')}")
    if spec.time:
        out.append(f"--time={units.time_limit(spec.time, 'time')}")
    if spec.array:
        out.append(f"--array={spec.array}")
    if spec.dependency:
        out.append(f"--dependency={render_dependency(spec.dependency)}")
        # Without it a job whose dependency fails pends forever (DependencyNeverSatisfied).
        out.append(f"--kill-on-invalid-dep={'yes' if spec.kill_on_invalid_dep else 'no'}")
    if spec.requeue is not None:
        out.append("--requeue" if spec.requeue else "--no-requeue")
    if spec.comment:
        out.append(f"--comment={spec.comment}")
    if spec.output:
        out.append(f"--output={spec.output}")
    if spec.error:
        out.append(f"--error={spec.error}")
    if spec.chdir:
        out.append(f"--chdir={spec.chdir}")
    if spec.constraint:
        out.append(f"--constraint={spec.constraint}")
    if spec.exclude:
        out.append("--exclude=" + ",".join(spec.exclude))
    if spec.signal:
        out.append(f"--signal={spec.signal}")
    out.extend(spec.extra_args)
    if script_path:
        out.append(script_path)
    return out


def log_dirs(spec: JobSpec) -> list[str]:
    """The directories the job's --output/--error files go in, which must exist before sbatch:
    slurmstepd creates a missing one only since Slurm 23.02 (SchedMD bug 14865). A directory part
    holding a filename pattern (%j, %x, ...) is Slurm's to expand and is left alone."""
    dirs: list[str] = []
    for path in (spec.output, spec.error):
        if not path:
            continue
        head = os.path.dirname(path)
        if head and "%" not in head and head not in dirs:
            dirs.append(head)
    return dirs
