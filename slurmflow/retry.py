"""`slurmflow retry`: resubmit a run's tasks that ended without success, as new arrays over just their
indices (compressed into runs). The task wrapper maps an index to the same trial in any job of the
node, so a retried task reruns its own trial, and an aftercorr between two retry arrays still pairs
index with index. Dependents retried together wait for the retried parents."""

from __future__ import annotations

import dataclasses
import time

from slurmflow import sbatch, slurm_text
from slurmflow.backends.base import Backend
from slurmflow.errors import UsageError
from slurmflow.model import DepClause, Dependency, DepKind, JobInfo, JobState, Plan
from slurmflow.monitor import _rewired_dependency, _task_keys
from slurmflow.store import RunState, RunStore


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
        for index, key in zip(indices, _task_keys(node, state), strict=True):
            info = jobs.get(key)
            if info is None or not info.state.final or info.state.succeeded:
                continue
            if failed_only and info.state is JobState.CANCELLED:
                continue
            chosen.setdefault(node.key, []).append(index)
    return chosen


def retry(store: RunStore, backend: Backend, *, stage: str | None, failed_only: bool) -> dict[str, str]:
    plan, state = store.plan(), store.state()
    if stage is not None and stage not in plan.stages:
        raise UsageError(f"--stage {stage!r}: no such stage in run {store.run_id} (stages: {', '.join(plan.stages)})")
    jobs = backend.query(state.job_ids()).by_id()
    chosen = select(plan, state, jobs, stage=stage, failed_only=failed_only)
    launch = store.read_json("launch.json")
    new_ids: dict[str, str] = {}
    for node in plan.nodes:  # topological: a retried parent is submitted before its children
        indices = chosen.get(node.key)
        if not indices:
            continue
        # A retried parent of an after_corr edge is paired with index by index; every other edge
        # waits for the parent's unfinished tasks (retried ones included, in their new job).
        corr = [e for e in node.edges if e.kind is DepKind.AFTER_CORR and e.parent in new_ids]
        others = dataclasses.replace(node, edges=tuple(e for e in node.edges if e not in corr))
        dependency = _rewired_dependency(plan, others, None, state, jobs)
        if corr:
            rest = dependency.clauses if dependency else ()
            dependency = Dependency((*rest, *(DepClause(DepKind.AFTER_CORR, (new_ids[e.parent],)) for e in corr)))
        spec = sbatch.node_spec(
            node,
            plan.stages[node.stage],
            state.submitted,  # the dependency built from these is replaced just below
            run_id=store.run_id,
            script=store.path("scripts", f"{node.key}.sh").read_text().split("\n", 1)[1],
            logs_dir=str(store.path("logs")),
            chdir=launch["cwd"],
        )
        array = None
        if node.array:
            array = slurm_text.compress_indices(i for i in indices if i is not None)
            array += f"%{node.throttle}" if node.throttle else ""
        spec = dataclasses.replace(spec, array=array, dependency=dependency)
        attempt = sum(1 for ev in store.events() if ev.get("event") == "resubmitted" and ev.get("node") == node.key) + 1
        script = store.write_text(f"scripts/{node.key}.retry{attempt}.sh", sbatch.render_script(spec), executable=True)
        job_id = backend.submit(spec, str(script))
        new_ids[node.key] = job_id
        store.append(
            {
                "event": "resubmitted",
                "node": node.key,
                "task": f"{job_id} ({len(indices)} task(s))",
                "indices": indices,
                "job_id": job_id,
                "why": "slurmflow retry",
                "t": time.time(),
            }
        )
        # Later nodes of this retry see the parent's tasks in their new job.
        for i in indices:
            state.moved[(node.key, i)] = job_id
    return new_ids
