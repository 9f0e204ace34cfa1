"""Dependents of retried tasks, and new jobs for tasks: what `monitor` and `retry` share.

Verified on 24.11: Slurm latches a failed dependency; a child cancelled by --kill-on-invalid-dep
can be requeued (held), rewired and released; `afterok:<array>` stays failed even after the failed
task is requeued and succeeds, so children are rewired to the parent's unfinished TASK ids.
A task resubmitted as a new array over its own index reruns the same trial (the wrapper maps
chunk offset + index), so an aftercorr between two such arrays still pairs index with index.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError
from slurmflow.model import JobNode, Plan
from slurmflow.planning.jobs import node_spec
from slurmflow.rundir.events import Resubmitted
from slurmflow.rundir.state import RunState
from slurmflow.rundir.state import task_index as task_index
from slurmflow.rundir.store import RunStore
from slurmflow.slurm import sbatch
from slurmflow.slurm import text as slurm_text
from slurmflow.slurm.types import DepClause, Dependency, DepKind, JobInfo, JobState


def task_keys(node: JobNode, state: RunState) -> list[str]:
    """Each task's id in Slurm now: `job_index`, through any retry that moved it to another job."""
    if not node.array:
        return [state.job_of(node.key, None) or ""]
    return [f"{state.job_of(node.key, i)}_{i}" for i in range(node.size)]


def stuck(info: JobInfo | None) -> bool:
    return (
        info is not None
        and info.reason == "DependencyNeverSatisfied"
        and info.state
        in (
            JobState.PENDING,
            JobState.CANCELLED,
        )
    )


def rewired_dependency(
    plan: Plan, child: JobNode, task: int | None, state: RunState, jobs: dict[str, JobInfo]
) -> Dependency | None:
    """The child's dependency on its parents' unfinished tasks (completed ones are satisfied)."""
    clauses: list[DepClause] = []
    for edge in child.edges:
        parent = plan.node(edge.parent)
        pid = state.submitted[edge.parent]
        paired = edge.kind is DepKind.AFTER_CORR and task is not None
        keys = [f"{state.job_of(edge.parent, task)}_{task}"] if paired else task_keys(parent, state)
        if edge.kind in (DepKind.AFTER_OK, DepKind.AFTER_CORR):
            waiting = [k for k in keys if (jobs.get(k) is None or jobs[k].state is not JobState.COMPLETED)]
            if waiting:
                clauses.append(DepClause(DepKind.AFTER_OK, tuple(waiting)))
        elif edge.kind is DepKind.AFTER_ANY:
            waiting = [k for k in keys if jobs.get(k) is None or not jobs[k].state.final]
            if waiting:
                clauses.append(DepClause(DepKind.AFTER_ANY, tuple(waiting)))
        else:
            clauses.append(DepClause(edge.kind, (pid,)))
    return Dependency(tuple(clauses), any_of=child.any_of) if clauses else None


def resubmit(
    store: RunStore,
    backend: Backend,
    plan: Plan,
    state: RunState,
    jobs: dict[str, JobInfo],
    chosen: Mapping[str, Sequence[int | None]],
    *,
    why: str,
    mem: Mapping[str, str] | None = None,
    on_error: Callable[[str, CommandError], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, str]:
    """New jobs for the chosen tasks of each node (in plan order), with `mem` overrides per node.
    Each `resubmitted` event is folded into `state` as it is written, so later nodes, status and
    the monitor follow the tasks. With `on_error`, a submission that fails is reported there and
    the rest of the batch waits for a later call (later nodes may depend on it): the nodes
    submitted so far are returned."""
    launch = store.read_json("launch.json")
    new_ids: dict[str, str] = {}
    for node in plan.nodes:  # topological: a retried parent is submitted before its children
        indices = list(chosen.get(node.key) or [])
        if not indices:
            continue
        # A retried parent of an after_corr edge is paired with index by index; every other edge
        # waits for the parent's unfinished tasks (retried ones included, in their new job).
        corr = [e for e in node.edges if e.kind is DepKind.AFTER_CORR and e.parent in new_ids]
        others = dataclasses.replace(node, edges=tuple(e for e in node.edges if e not in corr))
        dependency = rewired_dependency(plan, others, None, state, jobs)
        if corr:
            rest = dependency.clauses if dependency else ()
            dependency = Dependency((*rest, *(DepClause(DepKind.AFTER_CORR, (new_ids[e.parent],)) for e in corr)))
        spec = node_spec(
            node,
            plan.stages[node.stage],
            state.submitted,  # the dependency built from these is replaced just below
            run_id=store.run_id,
            script=store.path("scripts", f"{node.key}.sh").read_text().split("\n", 1)[1],
            logs_dir=str(store.logs_dir),
            chdir=launch["cwd"],
        )
        array = None
        if node.array:
            array = slurm_text.compress_indices(i for i in indices if i is not None)
            array += f"%{node.throttle}" if node.throttle else ""
        spec = dataclasses.replace(spec, array=array, dependency=dependency)
        if mem and node.key in mem:
            spec = dataclasses.replace(spec, mem=mem[node.key])
        attempt = len(state.resubmissions.get(node.key, ())) + 1
        script = store.write_text(f"scripts/{node.key}.retry{attempt}.sh", sbatch.render_script(spec), executable=True)
        try:
            job_id = backend.submit(spec, str(script))
        except CommandError as exc:
            if on_error is None:
                raise
            on_error(node.key, exc)
            break
        new_ids[node.key] = job_id
        event = Resubmitted(
            node=node.key,
            task=f"{job_id} ({len(indices)} task(s))",
            indices=tuple(indices),
            job_id=job_id,
            mem=spec.mem,
            why=why,
            t=clock(),
        )
        store.append(event)
        state.apply(event)  # later nodes of this retry see the parent's tasks in their new job
    return new_ids
