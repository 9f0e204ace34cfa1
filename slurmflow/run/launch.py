"""A launch from config to queue: prepare (compose, expand, plan, validate), write the run
directory, submit. The CLI is a thin layer over these three steps."""

from __future__ import annotations

import getpass
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import platform
import secrets
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slurmflow.errors import (
    CommandError,
    UsageError,
)
from slurmflow.experiment import config, objective, sweep, trialcfg
from slurmflow.model import Plan, Search
from slurmflow.planning import planner
from slurmflow.run import schedulers, search
from slurmflow.run.submission import context as context
from slurmflow.run.submission import submit_run as submit_run
from slurmflow.run.submitter import Progress
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.search import space, study
from slurmflow.slurm.runner import SubprocessRunner
from slurmflow.slurm.types import ClusterInfo

PACKAGES = ("slurmflow", "hydra-core", "omegaconf", "rich", "submitit", "nvidia-ml-py")


@dataclass(frozen=True)
class Prepared:
    experiment: config.Experiment
    plan: Plan
    cluster: ClusterInfo


def prepare(
    config_dir: Path,
    config_name: str,
    overrides: Sequence[str],
    cluster: ClusterInfo,
    *,
    max_array_size: int | None = None,
    max_tasks: int | None = None,
    cwd: Path | None = None,
) -> Prepared:
    """Everything that can reject a launch, before anything is written or submitted."""
    exp = config.load(config_dir, config_name, overrides)
    for stage in exp.stages.values():
        if stage.callable is not None:
            _check_callable(stage.name, stage.callable, cwd or Path.cwd())
        if stage.app is not None:
            _check_app(stage.name, stage.app, cwd or Path.cwd())
    # A search is planned at its worst case (every trial asked for runs to its time limit): what
    # `plan` shows and what the size and quota checks judge. The run's own plan grows per batch.
    if exp.search:
        space.check(exp.search, len(exp.objectives))  # the sampler's and pruner's options, built once
    n = exp.search.n_trials if exp.search else sweep.count(exp.axes)
    plan = planner.plan(exp.name, exp.stages, n, cluster, max_array_size=max_array_size)
    config.validate_trials(exp, sweep.representatives(_search_axes(exp.search) if exp.search else exp.axes))
    from slurmflow.planning.limits import size_refusal

    refusal = size_refusal(plan.tasks(), max_job_count=cluster.max_job_count, max_tasks=max_tasks)
    if refusal:
        raise UsageError(refusal)
    return Prepared(exp, plan, cluster)


def _search_axes(found: Search) -> tuple[sweep.Axis, ...]:
    """A search space as sweep axes of representative values (each bound, each choice): composing
    one trial per config-group choice, every other key at a bound, validates every stage command."""
    axes = []
    for p in found.params:
        points = p.choices if p.kind == "categorical" else (p.low, p.high)
        values = tuple(dict.fromkeys(space.override(p, v).partition("=")[2] for v in points))
        axes.append(sweep.Axis(p.name, values, group=p.group))
    return tuple(axes)


def _check_callable(stage: str, target: str, cwd: Path) -> None:
    """The module must be importable from the launch directory (jobs run from there); it is
    located, not imported: importing user code at plan time could have side effects."""
    module = target.partition(":")[0]
    found = _locate(module, [str(cwd), *sys.path])
    if found is None:
        raise UsageError(f"stages.{stage}.callable: no module {module!r} importable from {cwd}: check the name")


def _check_app(stage: str, app: str, cwd: Path) -> None:
    """A Hydra app stage's script exists (jobs run from the launch directory), or its module is
    importable from there; located, not run."""
    if app.endswith(".py") or "/" in app:
        if not (cwd / app).is_file():
            raise UsageError(
                f"stages.{stage}.app: no file {app} in {cwd}: give the app's path from the launch directory"
            )
    elif _locate(app, [str(cwd), *sys.path]) is None:
        raise UsageError(f"stages.{stage}.app: no module {app!r} importable from {cwd}: check the name")


def _locate(module: str, path: Sequence[str]) -> importlib.machinery.ModuleSpec | None:
    """A module's spec found on `path` package by package, never executing a package's
    __init__ (importlib.util.find_spec imports the parents of a dotted name)."""
    parts = module.split(".")
    if parts[0] in sys.builtin_module_names:
        return importlib.util.find_spec(parts[0]) if len(parts) == 1 else None
    spec = importlib.machinery.PathFinder.find_spec(parts[0], list(path))
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    return spec


def _git(cwd: Path) -> dict[str, Any]:
    runner = SubprocessRunner(timeout=30)
    try:
        top = runner.run(["git", "-C", str(cwd), "rev-parse", "--show-toplevel"]).stdout.strip()
        commit = runner.run(["git", "-C", top, "rev-parse", "HEAD"], check=False).stdout.strip() or None
        diff = runner.run(["git", "-C", top, "diff", "HEAD"], check=False).stdout
        status = runner.run(["git", "-C", top, "status", "--porcelain"], check=False).stdout
    except CommandError:
        return {"repository": None}
    return {
        "repository": top,
        "commit": commit,
        "dirty": bool(status.strip()),
        "status": status,
        "diff": diff,
    }


def provenance(cluster: ClusterInfo, cwd: Path, argv: Sequence[str], now: float) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "argv": list(argv),
        "cwd": str(cwd),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "python": sys.version,
        "platform": platform.platform(),
        "packages": versions,
        "slurm_version": cluster.version,
        "git": _git(cwd),
    }


def new_run_id(name: str, now: float) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{secrets.token_hex(2)}"


def check_runs_dir(runs_dir: Path) -> None:
    """A runs directory a run can be created in, or a one-line UsageError (before anything is written)."""
    probe = runs_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: {probe} is not a directory: name a directory (or a new path)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--runs-dir {runs_dir}: {probe} is not writable by you: choose another directory")


def write_run(
    prep: Prepared,
    runs_dir: Path,
    *,
    cwd: Path,
    python: str,
    argv: Sequence[str],
    clock: Callable[[], float] = time.time,
) -> RunStore:
    now = clock()
    exp = prep.experiment
    check_runs_dir(runs_dir)
    if exp.hydra.sweep_dir:  # hydra.sweep.dir set in the experiment: the run directory is there
        place = Path(exp.hydra.sweep_dir)
        place = place if place.is_absolute() else cwd / place
        if place.exists():
            raise UsageError(f"hydra.sweep.dir: {place} exists already: a run needs a new directory")
        check_runs_dir(place.parent)
        store = RunStore.create(place.parent, place.name)
    else:
        store = RunStore.create(runs_dir.resolve(), new_run_id(exp.name, now))
    store.snapshot_config(exp.config_dir, runs_dir=runs_dir)  # never the runs, wherever they are
    store.write_text("experiment.yaml", config.to_yaml(exp.config))
    store.write_text("multirun.yaml", exp.hydra.multirun_yaml)  # as Hydra leaves one in a sweep's directory
    store.write_json(
        "launch.json",
        {
            "config_name": exp.config_name,
            "base_overrides": list(exp.base_overrides),
            "cwd": str(cwd),
            "python": python,
            "trial_dirs": "number",  # trials/<trial number> (RunStore.trial_dir)
            "axes": [{"key": a.key, "values": list(a.values), "group": a.group} for a in exp.axes],
            # Set by each task on experiment.yaml without Hydra; null: the task composes (trialcfg.py).
            "values": _axis_values(exp),
            "chdir": exp.hydra.chdir,  # hydra.job.chdir: a trial's tasks run in its trial directory
            "experiment": exp.name,
            **objective.to_json(exp.objectives, exp.tracking),  # read by results, report and track
            **(
                {}
                if exp.search is None
                else {"search": space.to_json(exp.search), "max_array_size": prep.cluster.max_array_size}
            ),
        },
    )
    if exp.search is None:
        store.write_manifest(sweep.expand(exp.axes))
        store.write_json("plan.json", plan_to_dict(prep.plan))
    else:  # no trial yet: the first batch is asked for at submission (run/search.py)
        store.write_manifest(())
        empty = Plan(prep.plan.experiment, prep.plan.stages, (), 0, 0.0)
        store.write_json("plan.json", plan_to_dict(search.round_plan(empty, [], final=False)))
        study.create(store, exp.search, exp.objectives)
    store.write_json("provenance.json", provenance(prep.cluster, cwd, argv, now))
    return store


def _axis_values(exp: config.Experiment) -> list[list[Any]] | None:
    """Each axis's typed values, when every trial's config is experiment.yaml plus values."""
    out: list[list[Any]] = []
    for axis in exp.axes:
        if axis.group or axis.typed is None or not all(trialcfg.json_exact(v) for v in axis.typed):
            return None
        out.append([axis.key, list(axis.typed)])
    return out


def launch(
    prep: Prepared,
    chosen: schedulers.Chosen,
    runs_dir: Path,
    *,
    via: str | None,
    cwd: Path,
    python: str,
    argv: Sequence[str],
    hold: bool = False,
    progress: Progress | None = None,
) -> tuple[RunStore, dict[str, str]]:
    """`slurmflow launch`: write the run directory, record the backend, submit the whole graph."""
    if hold and chosen.local is not None:
        raise UsageError("--hold needs Slurm: the local backend runs jobs as soon as they are submitted")
    store = write_run(prep, runs_dir, cwd=cwd, python=python, argv=argv)
    schedulers.record(store, chosen, via)
    backend = chosen.backend if chosen.local is None else schedulers.local_run(store, chosen.local)
    if prep.experiment.search is not None:
        if hold:
            raise UsageError("--hold: a search submits its trials as they are asked for; launch it without --hold")
        search.advance(store, backend)  # the first batch; the monitor asks for the rest
        return store, dict(store.state().submitted)
    return store, submit_run(store, backend, hold=hold, progress=progress)


def jobs_by_stage(plan: Plan, ids: dict[str, str]) -> dict[str, list[str]]:
    """Submitted job ids per stage, in plan order."""
    by_stage: dict[str, list[str]] = {}
    for node in plan.nodes:
        if node.key in ids:
            by_stage.setdefault(node.stage, []).append(ids[node.key])
    return by_stage
