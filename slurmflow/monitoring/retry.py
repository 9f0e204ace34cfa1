"""`slurmflow retry`: resubmit a run's tasks that ended without success, as new arrays over just their
indices (compressed into runs). The task wrapper maps an index to the same trial in any job of the
node, so a retried task reruns its own trial, and an aftercorr between two retry arrays still pairs
index with index. Dependents retried together wait for the retried parents."""

from __future__ import annotations

import time
from collections.abc import Callable

from slurmflow.backends.base import Backend
from slurmflow.errors import UsageError
from slurmflow.model import Plan
from slurmflow.monitoring.rewire import resubmit, task_keys
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobInfo, JobState


def select(
    plan: Plan, state: RunState, jobs: dict[str, JobInfo], *, stage: str | None, failed_only: bool
) -> dict[str, list[int | None]]:
    """node key -> task indices to retry (pure): tasks that ended without success; with
    failed_only, not those that were cancelled (by a person or by a failed dependency)."""
    chosen: dict[str, list[int | None]] = {}
    for node in plan.nodes:
        if (stage is not None and node.stage != stage) or node.key not in state.submitted:
            continue
        indices = range(node.size) if node.array else [None]
        for index, key in zip(indices, task_keys(node, state), strict=True):
            info = jobs.get(key)
            if info is None or not info.state.final or info.state.succeeded:
                continue
            if failed_only and info.state is JobState.CANCELLED:
                continue
            chosen.setdefault(node.key, []).append(index)
    return chosen


def retry(
    store: RunStore,
    backend: Backend,
    *,
    stage: str | None,
    failed_only: bool,
    clock: Callable[[], float] = time.time,
) -> dict[str, str]:
    plan, state = store.plan(), store.state()
    if stage is not None and stage not in plan.stages:
        raise UsageError(f"--stage {stage!r}: no such stage in run {store.run_id} (stages: {', '.join(plan.stages)})")
    jobs = backend.query(state.jobs(plan, holding=True)).by_id()
    chosen = select(plan, state, jobs, stage=stage, failed_only=failed_only)
    return resubmit(store, backend, plan, state, jobs, chosen, why="slurmflow retry", clock=clock)
