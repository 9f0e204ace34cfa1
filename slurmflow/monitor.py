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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow import policy
from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError
from slurmflow.model import DepKind, JobInfo, JobNode, JobState
from slurmflow.rewire import resubmit, rewired_dependency, stuck, task_index, task_keys
from slurmflow.store import RunStore


@dataclass(frozen=True)
class Tick:
    actions: tuple[dict[str, object], ...]
    done: bool
    accounting_available: bool


def tick(store: RunStore, backend: Backend, *, clock: Callable[[], float] = time.time) -> Tick:
    plan, state = store.plan(), store.state()
    ids = state.jobs(plan, holding=True)
    result = backend.query(ids)
    jobs = result.by_id()
    events = store.events()
    retries = Counter(str(ev["task"]) for ev in events if ev.get("event") == "requeued")
    reported = {str(ev["task"]) for ev in events if ev.get("event") == "gave_up"}
    released = {str(ev["marker"]) for ev in events if ev.get("event") == "released"}
    actions: list[dict[str, object]] = []

    def record(event: dict[str, object]) -> None:
        event["t"] = clock()
        store.append(event)
        actions.append(event)

    def failed(task: str, node: str, action: str, exc: CommandError) -> None:
        # One line: the command and Slurm's message (CommandError says both).
        record({"event": "action_failed", "task": task, "node": node, "action": action, "why": one_line(exc)})

    # Retries so far per (node, task index), from the run's history and this tick: a dependent that
    # Slurm cancels a moment after its parent failed is revived on a later tick, and at most once
    # per retry of the parents it depends on (a parent that gives up leaves it cancelled).
    retried: Counter[tuple[str, int | None]] = Counter()
    oom_done: Counter[tuple[str, int | None]] = Counter()
    mem_now: dict[str, str] = {}  # node -> memory of its latest resubmission
    bigger: dict[str, dict[int | None, str]] = {}  # node -> task index -> memory to resubmit with
    rewires: Counter[str] = Counter()
    unfinished: set[str] = set()  # tasks whose last rewire failed part-way (maybe left held)
    for ev in events:
        if ev.get("event") in ("requeued", "rewired"):
            retried[(str(ev["node"]), task_index(str(ev["task"])))] += 1
        elif ev.get("event") == "resubmitted":
            for i in ev["indices"]:
                retried[(str(ev["node"]), i)] += 1
                if "OUT_OF_MEMORY" in str(ev.get("why")):
                    oom_done[(str(ev["node"]), i)] += 1
            if ev.get("mem"):
                mem_now[str(ev["node"])] = str(ev["mem"])
        if ev.get("event") == "rewired":
            rewires[str(ev["task"])] += 1
            unfinished.discard(str(ev["task"]))
        elif ev.get("event") == "action_failed" and ev.get("action") == "rewire":
            unfinished.add(str(ev["task"]))

    def parent_retries(node: JobNode, index: int | None) -> tuple[int, list[str]]:
        count, parents = 0, []
        for e in node.edges:
            if e.kind is DepKind.AFTER_CORR and index is not None:
                n = retried[(e.parent, index)]
            else:
                n = sum(v for (k, _), v in retried.items() if k == e.parent)
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
            left_held = key in unfinished and held(info)
            if stuck(info) or left_held:
                count, parents = parent_retries(node, index)
                if count > rewires[key]:
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
                    rewires[key] += 1
                    retried[(node.key, index)] += 1  # so that its own cancelled dependents are revived too
                    record(
                        {
                            "event": "rewired",
                            "task": key,
                            "node": node.key,
                            "why": f"its parent {', '.join(parents)} was retried",
                        }
                    )
                    continue
            if info.state is JobState.PENDING and info.reason == "BeginTime" and (info.restarts or 0) > 0:
                marker = f"{key}#{info.restarts}"
                if marker not in released:
                    # Slurm requeued it itself (a node failed under it) and holds it ~120 s; the node
                    # is gone, so let it start elsewhere now. Once per restart.
                    try:
                        backend.update_begin_now(key)
                    except CommandError as exc:
                        failed(key, node.key, "release", exc)
                        continue
                    released.add(marker)
                    record(
                        {
                            "event": "released",
                            "task": key,
                            "node": node.key,
                            "marker": marker,
                            "why": f"Slurm requeued it (restart {info.restarts}); its 2-minute hold was lifted",
                        }
                    )
                continue
            obs = policy.Observed(
                info.state,
                info.exit_code,
                info.reason,
                info.nodes,
                info.cancelled_by,
                requeueable=plan.stages[node.stage].requeue is not False,
                mem=mem_now.get(node.key) or plan.stages[node.stage].resources.mem,
            )
            done_before = oom_done[(node.key, index)] if info.state is JobState.OUT_OF_MEMORY else retries[key]
            decision = policy.decide(obs, retry, done_before)
            if decision.act is policy.Act.RESUBMIT and decision.mem:
                bigger.setdefault(node.key, {})[index] = decision.mem
                continue
            if decision.act is policy.Act.REQUEUE:
                try:
                    backend.requeue([key], start_now=True)
                except CommandError as exc:
                    record({"event": "requeue_failed", "task": key, "node": node.key, "why": one_line(exc)})
                    continue
                exclude = decision.exclude_node
                if exclude:
                    try:
                        backend.exclude_nodes(key, [exclude])
                    except CommandError as exc:
                        # Requeued all the same (a second requeue of a pending task would fail).
                        failed(key, node.key, "exclude_node", exc)
                        exclude = None
                retried[(node.key, index)] += 1
                record(
                    {
                        "event": "requeued",
                        "task": key,
                        "node": node.key,
                        "why": decision.why,
                        "exclude": exclude,
                    }
                )
            elif decision.act is policy.Act.GIVE_UP and key not in reported:
                record({"event": "gave_up", "task": key, "node": node.key, "why": decision.why})
    if bigger:
        # Out of memory: a new job per node for those tasks, with the larger request (the largest
        # asked for among them); their dependents are revived on the next ticks like a requeue's.
        chosen = {node: sorted(tasks, key=lambda i: -1 if i is None else i) for node, tasks in bigger.items()}
        mem = {node: max(tasks.values(), key=lambda m: int(m.rstrip("M"))) for node, tasks in bigger.items()}

        def refused(node_key: str, exc: CommandError) -> None:
            # Not resubmitted: its tasks are still out of memory, so the next tick tries again.
            failed(f"{len(chosen[node_key])} task(s) of {node_key}", node_key, "resubmit", exc)

        new_ids = resubmit(store, backend, plan, state, jobs, chosen, why="OUT_OF_MEMORY", mem=mem, on_error=refused)
        for node_key, job_id in new_ids.items():
            actions.append(
                {
                    "event": "resubmitted",
                    "task": job_id,
                    "node": node_key,
                    "mem": mem[node_key],
                    "why": f"OUT_OF_MEMORY: {len(chosen[node_key])} task(s) resubmitted with mem={mem[node_key]}",
                }
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
