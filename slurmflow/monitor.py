"""One reconcile tick of a run: query -> policy -> act -> record. `slurmflow monitor` loops it.

After a requeue, dependents whose dependency already failed are revived: Slurm latches a failed
dependency, and a child cancelled by --kill-on-invalid-dep stays cancelled. Verified on 24.11:
such a child can be requeued and its dependency updated; `afterok:<array>` stays failed even
after the failed task is requeued and succeeds, so children are rewired to the parent's
unfinished TASK ids (aftercorr: the one paired task).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow import policy
from slurmflow.backends.base import Backend
from slurmflow.errors import SlurmError
from slurmflow.model import DepClause, Dependency, DepKind, JobInfo, JobNode, JobState, Plan
from slurmflow.store import RunStore


@dataclass(frozen=True)
class Tick:
    actions: tuple[dict[str, object], ...]
    done: bool
    accounting_available: bool


def _task_keys(node: JobNode, job_id: str) -> list[str]:
    return [f"{job_id}_{i}" for i in range(node.size)] if node.array else [job_id]


def _stuck(info: JobInfo | None) -> bool:
    return (
        info is not None
        and info.reason == "DependencyNeverSatisfied"
        and info.state
        in (
            JobState.PENDING,
            JobState.CANCELLED,
        )
    )


def _rewired_dependency(
    plan: Plan, child: JobNode, task: int | None, submitted: dict[str, str], jobs: dict[str, JobInfo]
) -> Dependency | None:
    """The child's dependency on its parents' unfinished tasks (completed ones are satisfied)."""
    clauses: list[DepClause] = []
    for edge in child.edges:
        parent = plan.node(edge.parent)
        pid = submitted[edge.parent]
        paired = edge.kind is DepKind.AFTER_CORR and task is not None
        keys = [f"{pid}_{task}"] if paired else _task_keys(parent, pid)
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


def tick(store: RunStore, backend: Backend, *, clock: Callable[[], float] = time.time) -> Tick:
    plan, state = store.plan(), store.state()
    ids = sorted(set(state.submitted.values()), key=int)
    result = backend.query(ids)
    jobs = result.by_id()
    events = store.events()
    retries = Counter(str(ev["task"]) for ev in events if ev.get("event") == "requeued")
    reported = {str(ev["task"]) for ev in events if ev.get("event") == "gave_up"}
    actions: list[dict[str, object]] = []

    def record(event: dict[str, object]) -> None:
        event["t"] = clock()
        store.append(event)
        actions.append(event)

    revived: dict[str, set[int | None]] = {}  # node key -> task indices requeued or rewired this tick
    for node in plan.nodes:
        job_id = state.submitted.get(node.key)
        if job_id is None:
            continue
        retry = plan.stages[node.stage].retry
        for index, key in zip(range(node.size) if node.array else [None], _task_keys(node, job_id), strict=True):
            info = jobs.get(key)
            if info is None:
                continue
            if _stuck(info) and any(e.parent in revived for e in node.edges):
                relevant = [
                    e
                    for e in node.edges
                    if e.parent in revived and (e.kind is not DepKind.AFTER_CORR or index in revived[e.parent])
                ]
                if relevant:
                    dependency = _rewired_dependency(plan, node, index, state.submitted, jobs)
                    if info.state is JobState.CANCELLED:
                        # Held, so Slurm cannot judge the old dependency again before it is replaced.
                        backend.requeue([key], start_now=True, hold=True)
                        backend.update_dependency(key, dependency)
                        backend.release([key])
                    else:
                        backend.update_dependency(key, dependency)
                    revived.setdefault(node.key, set()).add(index)
                    record(
                        {
                            "event": "rewired",
                            "task": key,
                            "node": node.key,
                            "why": f"its parent {', '.join(e.parent for e in relevant)} was retried",
                        }
                    )
                    continue
            obs = policy.Observed(info.state, info.exit_code, info.reason, info.nodes, info.cancelled_by)
            decision = policy.decide(obs, retry, retries[key])
            if decision.act is policy.Act.REQUEUE:
                try:
                    backend.requeue([key], start_now=True)
                    if decision.exclude_node:
                        backend.exclude_nodes(key, [decision.exclude_node])
                except SlurmError as exc:
                    record({"event": "requeue_failed", "task": key, "node": node.key, "why": str(exc)})
                    continue
                revived.setdefault(node.key, set()).add(index)
                record(
                    {
                        "event": "requeued",
                        "task": key,
                        "node": node.key,
                        "why": decision.why,
                        "exclude": decision.exclude_node,
                    }
                )
            elif decision.act is policy.Act.GIVE_UP and key not in reported:
                record({"event": "gave_up", "task": key, "node": node.key, "why": decision.why})
    done = not actions and bool(jobs) and all(j.state.final for j in jobs.values())
    return Tick(tuple(actions), done, result.accounting_available)
