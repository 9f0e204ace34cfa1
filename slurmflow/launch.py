"""A launch from config to queue: prepare (compose, expand, plan, validate), write the run
directory, submit. The CLI is a thin layer over these three steps."""

from __future__ import annotations

import getpass
import importlib.metadata
import platform
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slurmflow import config, planner, sweep
from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError, UsageError
from slurmflow.model import ClusterInfo, JobNode, Plan
from slurmflow.runner import SubprocessRunner
from slurmflow.store import RunStore, plan_to_dict
from slurmflow.submitter import Context, Progress, submit

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
) -> Prepared:
    """Everything that can reject a launch, before anything is written or submitted."""
    exp = config.load(config_dir, config_name, overrides)
    for stage in exp.stages.values():
        if stage.callable is not None:
            raise UsageError(f"stages.{stage.name}.callable: callable stages are not supported yet; use a command")
    plan = planner.plan(exp.name, exp.stages, sweep.count(exp.axes), cluster, max_array_size=max_array_size)
    config.validate_trials(exp, sweep.representatives(exp.axes))
    return Prepared(exp, plan, cluster)


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


def provenance(prep: Prepared, cwd: Path, argv: Sequence[str], now: float) -> dict[str, Any]:
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
        "slurm_version": prep.cluster.version,
        "git": _git(cwd),
    }


def new_run_id(name: str, now: float) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{secrets.token_hex(2)}"


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
    store = RunStore.create(runs_dir.resolve(), new_run_id(exp.name, now))
    store.snapshot_config(exp.config_dir)
    store.write_text("experiment.yaml", config.to_yaml(exp.config))
    store.write_json(
        "launch.json",
        {
            "config_name": exp.config_name,
            "base_overrides": list(exp.base_overrides),
            "cwd": str(cwd),
            "python": python,
            "axes": [{"key": a.key, "values": list(a.values), "group": a.group} for a in exp.axes],
        },
    )
    store.write_manifest(sweep.expand(exp.axes))
    store.write_json("plan.json", plan_to_dict(prep.plan))
    store.write_json("provenance.json", provenance(prep, cwd, argv, now))
    return store


def context(store: RunStore, *, hold: bool = False) -> Context:
    launch = store.read_json("launch.json")
    python, root = launch["python"], str(store.root)

    def script(node: JobNode) -> str:
        return f"exec {shlex.quote(python)} -m slurmflow.task {shlex.quote(root)} {shlex.quote(node.key)}"

    return Context(run_id=store.run_id, script=script, logs_dir=str(store.path("logs")), chdir=launch["cwd"], hold=hold)


def submit_run(
    store: RunStore,
    backend: Backend,
    *,
    resume: bool = False,
    hold: bool = False,
    progress: Progress | None = None,
) -> dict[str, str]:
    with store.lock():
        return submit(store.plan(), backend, store, context(store, hold=hold), resume=resume, progress=progress)
