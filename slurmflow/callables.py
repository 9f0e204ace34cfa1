"""Stages that name a Python callable (`module:function`), submitted through submitit.

submitit pickles the call and gives the job its environment (`submitit.JobEnvironment`, its
result and log files). What it pickles is `slurmflow.task.call_stage(run_dir, node, index)`,
which composes the trial's config in the job and calls the user's function with it, so planning
still composes nothing per trial. The planner's dependencies, job name and comment go on the
same sbatch line as for command stages.

submitit runs sbatch itself, on the machine slurmflow runs on: with a command prefix (`--via`),
callable stages go through the ordinary script instead, which calls the function the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slurmflow import sbatch
from slurmflow.model import JobNode, JobSpec, Resources
from slurmflow.task import call_stage


def _minutes(res: Resources) -> int | None:
    hours = res.hours()
    return None if hours is None else max(1, math.ceil(hours * 60))


def parameters(spec: JobSpec, node: JobNode, res: Resources, *, hold: bool) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for a node (pure)."""
    extra: dict[str, Any] = {"kill-on-invalid-dep": "yes" if spec.kill_on_invalid_dep else "no"}
    if spec.chdir:
        extra["chdir"] = spec.chdir
    if spec.requeue is not None:
        extra["requeue" if spec.requeue else "no-requeue"] = True
    if hold:
        extra["hold"] = True
    params: dict[str, Any] = {
        "job_name": spec.name,
        "comment": spec.comment,
        "stderr_to_stdout": True,
        "use_srun": False,  # one task per job: the batch step itself runs the function
        "additional_parameters": extra,
        "array_parallelism": node.throttle or node.size,
    }
    if spec.dependency:
        params["dependency"] = sbatch.render_dependency(spec.dependency)
    for key, value in (
        ("partition", res.partition),
        ("account", res.account),
        ("qos", res.qos),
        ("cpus_per_task", res.cpus),
        ("mem", res.mem),
        ("constraint", res.constraint),
        ("time", _minutes(res)),
        ("gres", f"gpu:{res.gpus}" if res.gpus else None),
        ("exclude", ",".join(spec.exclude) if spec.exclude else None),
    ):
        if value is not None:
            params[key] = value
    return params


def submit(spec: JobSpec, node: JobNode, res: Resources, *, run_dir: Path, python: str, hold: bool) -> str:
    """Submit a callable node with submitit; return its (array) job id."""
    import submitit

    executor = submitit.SlurmExecutor(folder=str(run_dir / "submitit" / node.key), python=python)
    executor.update_parameters(**parameters(spec, node, res, hold=hold))
    root = str(run_dir)
    if node.array:
        n = node.size
        jobs = executor.map_array(call_stage, [root] * n, [node.key] * n, list(range(n)))
        return str(jobs[0].job_id).split("_", 1)[0]
    return str(executor.submit(call_stage, root, node.key, None).job_id)
