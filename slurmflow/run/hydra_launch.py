"""A Hydra app's --multirun as a slurmflow run: what the `hydra/launcher=slurmflow` plugin hands
over (each job's overrides, the stage's resources, the app's pickled Hydra state) becomes a run
directory with a one-stage plan, submitted like any launch (chunked arrays, intents before each
sbatch, throttled), and the plugin returns.

Nothing here composes a config: each job composes its own at start, from the run's snapshot of the
app's config directory (experiment/hydra_job.py). This module imports no Hydra; the plugin does.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slurmflow.errors import UsageError
from slurmflow.experiment import sweep
from slurmflow.experiment.hydra_job import RETURN_FILE as RETURN_FILE
from slurmflow.experiment.hydra_job import STATE_FILE
from slurmflow.experiment.stages import NAME
from slurmflow.model import Plan, Stage, Trial
from slurmflow.planning import planner
from slurmflow.planning.limits import size_refusal
from slurmflow.run import schedulers
from slurmflow.run.launch import check_runs_dir, new_run_id, provenance, submit_run
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm.types import ClusterInfo

# In the run directory: the app's Hydra state (task function, config loader, the sweep's config),
# pickled once per launch (STATE_FILE); each job unpickles it and composes its own config, and
# leaves its JobReturn in its trial directory (RETURN_FILE), what `wait=true` returns to Hydra.
JOB_MODULE = "slurmflow.experiment.hydra_job"


@dataclass(frozen=True)
class AppLaunch:
    """One launch() call of the plugin: a batch of Hydra jobs."""

    name: str  # hydra.job.name, made a stage name
    jobs: Sequence[Sequence[str]]  # each job's overrides, as Hydra's sweeper gives them
    first_num: int  # hydra.job.num of the first job (Hydra's initial_job_idx)
    stage: Stage  # the resources and policies the launcher's parameters give
    state: bytes  # the pickled Hydra state
    config_dir: Path | None  # the app's primary config directory, snapshot for the jobs
    config_yaml: str  # the app's config (the sweep's, no hydra node), for the record
    sweep_dir: str  # hydra.sweep.dir: where each job's output directory goes
    app_dir: str | None = None  # the app's script's directory: on the job's sys.path


def stage_name(job_name: str) -> str:
    """A Hydra job name (the script's file name) as a slurmflow stage name."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", job_name)[:64]
    if not name or not name[0].isalpha():
        name = ("app_" + name)[:64]
    assert NAME.match(name), name
    return name


def plan(app: AppLaunch, chosen: schedulers.Chosen, *, max_array_size: int | None = None) -> tuple[Plan, ClusterInfo]:
    """The one-stage plan of a batch, refused (UsageError) before anything is written where the
    cluster could not take it."""
    if not app.jobs:
        raise UsageError("the sweep yields no jobs: check the overrides")
    cluster = chosen.backend.cluster_info()
    p = planner.plan(app.name, {app.stage.name: app.stage}, len(app.jobs), cluster, max_array_size=max_array_size)
    refusal = size_refusal(p.tasks(), max_job_count=cluster.max_job_count, max_tasks=None)
    if refusal:
        raise UsageError(refusal)
    return p, cluster


def trials(app: AppLaunch) -> list[Trial]:
    return [Trial(i, sweep.trial_id(tuple(ovs)), tuple(ovs)) for i, ovs in enumerate(app.jobs)]


def write_run(
    app: AppLaunch,
    plan: Plan,
    cluster: ClusterInfo,
    runs_dir: Path,
    *,
    cwd: Path,
    argv: Sequence[str],
    python: str = sys.executable,
    clock: Callable[[], float] = time.time,
) -> RunStore:
    now = clock()
    check_runs_dir(runs_dir)
    store = RunStore.create(runs_dir.resolve(), new_run_id(app.name, now))
    if app.config_dir is not None:
        store.snapshot_config(app.config_dir, runs_dir=runs_dir)
    store.write_text("experiment.yaml", app.config_yaml)
    store.write_json(
        "launch.json",
        {
            "config_name": None,
            "base_overrides": [],
            "cwd": str(cwd),
            "python": python,
            "trial_dirs": "number",  # trials/<trial number> (RunStore.trial_dir)
            "axes": [],
            "values": [],
            # A Hydra app's launch: each job composes and runs the app (experiment/hydra_job.py).
            "hydra_app": {
                "first_num": app.first_num,
                "sweep_dir": app.sweep_dir,
                "snapshot": app.config_dir is not None,
                "app_dir": app.app_dir,
            },
        },
    )
    store.write_bytes(STATE_FILE, app.state)
    store.write_manifest(trials(app))
    store.write_json("plan.json", plan_to_dict(plan))
    store.write_json("provenance.json", provenance(cluster, cwd, argv, now))
    return store


def launch(
    app: AppLaunch,
    chosen: schedulers.Chosen,
    runs_dir: Path,
    *,
    via: str | None,
    cwd: Path,
    argv: Sequence[str],
    hold: bool = False,
    max_array_size: int | None = None,
) -> tuple[RunStore, Plan, dict[str, str]]:
    """Plan, write and submit a batch; returns as soon as Slurm has every job."""
    if hold and chosen.local is not None:
        raise UsageError(
            "hydra.launcher.hold=true needs Slurm: the local backend runs jobs as soon as they are submitted"
        )
    planned, cluster = plan(app, chosen, max_array_size=max_array_size)
    store = write_run(app, planned, cluster, runs_dir, cwd=cwd, argv=argv)
    schedulers.record(store, chosen, via)
    backend = chosen.backend if chosen.local is None else schedulers.local_run(store, chosen.local)
    return store, planned, submit_run(store, backend, hold=hold)
