"""One reconcile tick of a run: query -> policy -> act -> record. `slurmflow monitor` loops it.

After a requeue, dependents whose dependency already failed are revived: Slurm latches a failed
dependency, and a child cancelled by --kill-on-invalid-dep stays cancelled. Verified on 24.11:
such a child can be requeued and its dependency updated; `afterok:<array>` stays failed even
after the failed task is requeued and succeeds, so children are rewired to the parent's
unfinished TASK ids (aftercorr: the one paired task).

An action Slurm refuses (a failed `scontrol update`, `requeue`, `release` or `sbatch`) is an
`action_failed` event, not the end of the tick: the other actions go on, and the failed one is
not marked done, so a later tick tries it again. A rewire that failed after its `requeuehold`
leaves the task held; a later tick recognises it and finishes the rewire.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError
from slurmflow.model import JobNode
from slurmflow.monitoring import policy
from slurmflow.monitoring.rewire import resubmit, rewired_dependency, stuck, task_keys
from slurmflow.rundir.events import (
    Action,
    ActionFailed,
    GaveUp,
    Released,
    Requeued,
    RequeueFailed,
    Resubmitted,
    Rewired,
)
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import DepKind, JobInfo, JobState


@dataclass(frozen=True)
class Tick:
    actions: tuple[Action, ...]
    done: bool
    accounting_available: bool


def tick(store: RunStore, backend: Backend, *, clock: Callable[[], float] = time.time) -> Tick:
    plan, state = store.plan(), store.state()
    ids = state.jobs(plan, holding=True)
    result = backend.query(ids)
    jobs = result.by_id()
    actions: list[Action] = []

    def record(event: Action) -> None:
        # Written, and folded into the state this tick goes on with: a rewired or requeued task
        # counts as retried for its own dependents, a lifted hold is not lifted twice.
        store.append(event)
        state.apply(event)
        actions.append(event)

    def failed(task: str, node: str, action: str, exc: CommandError) -> None:
        # One line: the command and Slurm's message (CommandError says both).
        record(ActionFailed(task=task, node=node, action=action, why=one_line(exc), t=clock()))

    bigger: dict[str, dict[int | None, str]] = {}  # node -> task index -> memory to resubmit with

    # Retries so far per (node, task index), from the run's history and this tick: a dependent that
    # Slurm cancels a moment after its parent failed is revived on a later tick, and at most once
    # per retry of the parents it depends on (a parent that gives up leaves it cancelled).
    def parent_retries(node: JobNode, index: int | None) -> tuple[int, list[str]]:
        count, parents = 0, []
        for e in node.edges:
            if e.kind is DepKind.AFTER_CORR and index is not None:
                n = state.retried[(e.parent, index)]
            else:
                n = state.node_retried[e.parent]
            if n:
                count += n
                parents.append(e.parent)
        return count, parents

    for node in plan.nodes:
        if node.key not in state.submitted:
            continue
        retry = plan.stages[node.stage].retry
        for index, key in zip(range(node.size) if node.array else [None], task_keys(node, state), strict=True):
            info = jobs.get(key)
            if info is None:
                continue
            left_held = key in state.rewiring and held(info)
            if stuck(info) or left_held:
                count, parents = parent_retries(node, index)
                if count > state.rewires[key]:
                    dependency = rewired_dependency(plan, node, index, state, jobs)
                    try:
                        if info.state is JobState.CANCELLED:
                            # Held, so Slurm cannot judge the old dependency again before it is replaced.
                            backend.requeue([key], start_now=True, hold=True)
                        backend.update_dependency(key, dependency)
                        if info.state is JobState.CANCELLED or left_held:
                            backend.release([key])
                    except CommandError as exc:
                        failed(key, node.key, "rewire", exc)
                        continue
                    # Counted as a retry of this task too, so that its own cancelled dependents are revived.
                    record(
                        Rewired(task=key, node=node.key, why=f"its parent {', '.join(parents)} was retried", t=clock())
                    )
                    continue
            if info.state is JobState.PENDING and info.reason == "BeginTime" and (info.restarts or 0) > 0:
                marker = f"{key}#{info.restarts}"
                if marker not in state.released:
                    # Slurm requeued it itself (a node failed under it) and holds it ~120 s; the node
                    # is gone, so let it start elsewhere now. Once per restart.
                    try:
                        backend.update_begin_now(key)
                    except CommandError as exc:
                        failed(key, node.key, "release", exc)
                        continue
                    why = f"Slurm requeued it (restart {info.restarts}); its 2-minute hold was lifted"
                    record(Released(task=key, node=node.key, marker=marker, why=why, t=clock()))
                continue
            obs = policy.Observed(
                info.state,
                info.exit_code,
                info.reason,
                info.nodes,
                info.cancelled_by,
                requeueable=plan.stages[node.stage].requeue is not False,
                mem=state.mem.get(node.key) or plan.stages[node.stage].resources.mem,
            )
            oom = info.state is JobState.OUT_OF_MEMORY
            done_before = state.oom[(node.key, index)] if oom else state.requeues[key]
            decision = policy.decide(obs, retry, done_before)
            if decision.act is policy.Act.RESUBMIT and decision.mem:
                bigger.setdefault(node.key, {})[index] = decision.mem
                continue
            if decision.act is policy.Act.REQUEUE:
                try:
                    backend.requeue([key], start_now=True)
                except CommandError as exc:
                    record(RequeueFailed(task=key, node=node.key, why=one_line(exc), t=clock()))
                    continue
                exclude = decision.exclude_node
                if exclude:
                    try:
                        backend.exclude_nodes(key, [exclude])
                    except CommandError as exc:
                        # Requeued all the same (a second requeue of a pending task would fail).
                        failed(key, node.key, "exclude_node", exc)
                        exclude = None
                record(Requeued(task=key, node=node.key, why=decision.why, exclude=exclude, t=clock()))
            elif decision.act is policy.Act.GIVE_UP and key not in state.gave_up:
                record(GaveUp(task=key, node=node.key, why=decision.why, t=clock()))
    if bigger:
        # Out of memory: a new job per node for those tasks, with the larger request (the largest
        # asked for among them); their dependents are revived on the next ticks like a requeue's.
        chosen = {node: sorted(tasks, key=lambda i: -1 if i is None else i) for node, tasks in bigger.items()}
        mem = {node: max(tasks.values(), key=lambda m: int(m.rstrip("M"))) for node, tasks in bigger.items()}

        def refused(node_key: str, exc: CommandError) -> None:
            # Not resubmitted: its tasks are still out of memory, so the next tick tries again.
            failed(f"{len(chosen[node_key])} task(s) of {node_key}", node_key, "resubmit", exc)

        new_ids = resubmit(
            store, backend, plan, state, jobs, chosen, why="OUT_OF_MEMORY", mem=mem, on_error=refused, clock=clock
        )
        for node_key, job_id in new_ids.items():
            # Shown with the new job's id and the memory; the log has the `resubmitted` event itself.
            why = f"OUT_OF_MEMORY: {len(chosen[node_key])} task(s) resubmitted with mem={mem[node_key]}"
            indices = tuple(chosen[node_key])
            actions.append(
                Resubmitted(
                    task=job_id, node=node_key, indices=indices, job_id=job_id, mem=mem[node_key], why=why, t=clock()
                )
            )
    done = not actions and bool(jobs) and all(j.state.final for j in jobs.values())
    return Tick(tuple(actions), done, result.accounting_available)


def held(info: JobInfo) -> bool:
    """Pending with priority zero (`requeuehold`, `scontrol hold`): Slurm waits for a `release`."""
    return info.state is JobState.PENDING and (info.reason or "").startswith("JobHeld")


def one_line(exc: BaseException) -> str:
    """An exception as one line for the event log (a CommandError: the command and Slurm's message)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CommandError) else f"{type(exc).__name__}: {text}"
