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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError
from slurmflow.model import JobNode, Plan
from slurmflow.monitoring import policy
from slurmflow.monitoring.rewire import resubmit, rewired_dependency, stuck, task_keys
from slurmflow.results import tracking
from slurmflow.run import search
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
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import DepKind, JobInfo, JobState


@dataclass(frozen=True)
class Tick:
    actions: tuple[Action, ...]
    done: bool
    accounting_available: bool


def tick(store: RunStore, backend: Backend, *, clock: Callable[[], float] = time.time) -> Tick:
    """Observe every task of the run in one query, decide per task, act, record each action."""
    plan, state = store.plan(), store.state()
    result = backend.query(state.jobs(plan, holding=True))
    run = _Tick(store, backend, plan, state, result.by_id(), clock)
    pruned = state.pruned_tasks  # a search stopped them: neither failed nor to be retried
    for node in plan.nodes:
        if node.key not in state.submitted:
            continue
        for index, key in zip(range(node.size) if node.array else [None], task_keys(node, state), strict=True):
            info = run.jobs.get(key)
            if info is not None and key not in pruned:
                run.task(node, index, key, info)
    run.resubmit_moved()
    finished = True
    if store.has_search():
        # A search: tell the study what ended, prune, ask for and submit the next trials.
        # A task this tick requeued or resubmits still shows how it ended: to the search it is in
        # flight again.
        seen = {k: v for k, v in run.jobs.items() if k not in run.retrying}
        step = search.advance(store, backend, jobs=seen, clock=clock)
        run.actions.extend(step.actions)
        finished = step.finished
    done = finished and not run.actions and bool(run.jobs) and all(j.state.final for j in run.jobs.values())
    run.track(done)
    return Tick(tuple(run.actions), done, result.accounting_available)


@dataclass
class _Tick:
    store: RunStore
    backend: Backend
    plan: Plan
    state: RunState
    jobs: dict[str, JobInfo]
    clock: Callable[[], float]
    actions: list[Action] = field(default_factory=list)
    bigger: dict[str, dict[int | None, str]] = field(default_factory=dict)  # node -> task -> memory
    again: dict[str, set[int | None]] = field(default_factory=dict)  # node -> preempted tasks
    retrying: set[str] = field(default_factory=set)  # task ids this tick requeued or resubmits

    def record(self, event: Action) -> None:
        # Written, and folded into the state this tick goes on with: a rewired or requeued task
        # counts as retried for its own dependents, a lifted hold is not lifted twice.
        self.store.append(event)
        self.state.apply(event)
        self.actions.append(event)

    def failed(self, task: str, node: str, action: str, exc: CommandError) -> None:
        # One line: the command and Slurm's message (CommandError says both).
        self.record(ActionFailed(task=task, node=node, action=action, why=one_line(exc), t=self.clock()))

    def track(self, done: bool) -> None:
        """After the tick's own work, where the experiment asks for MLflow (launch.json's
        `tracking`): what is new, at most every minute and once when the campaign has ended. Never
        fails the tick, nor holds `done` back: a failure is one `action_failed` line, said once."""
        warning = tracking.after_tick(self.store, self.backend, done=done, now=self.clock())
        if warning:
            self.record(ActionFailed(task="mlflow", node="monitor", action="track", why=warning, t=self.clock()))

    def task(self, node: JobNode, index: int | None, key: str, info: JobInfo) -> None:
        if self.rewire(node, index, key, info) or self.lift_begin_time(node, key, info):
            return
        self.apply_policy(node, index, key, info)

    def parent_retries(self, node: JobNode, index: int | None) -> tuple[int, list[str]]:
        """Retries so far of the parents a task depends on, from the run's history and this tick:
        a dependent that Slurm cancels a moment after its parent failed is revived on a later
        tick, and at most once per retry of its parents (a parent that gives up leaves it)."""
        count, parents = 0, []
        for e in node.edges:
            if e.kind is DepKind.AFTER_CORR and index is not None:
                n = self.state.retried[(e.parent, index)]
            else:
                n = self.state.node_retried[e.parent]
            if n:
                count += n
                parents.append(e.parent)
        return count, parents

    def rewire(self, node: JobNode, index: int | None, key: str, info: JobInfo) -> bool:
        """A dependent whose dependency failed (or a rewire left held) after its parents were
        retried: requeue it held, point it at the parents' tasks now, release it."""
        left_held = key in self.state.rewiring and held(info)
        if not (stuck(info) or left_held):
            return False
        count, parents = self.parent_retries(node, index)
        if count <= self.state.rewires[key]:
            return False
        dependency = rewired_dependency(self.plan, node, index, self.state, self.jobs)
        try:
            if info.state is JobState.CANCELLED:
                # Held, so Slurm cannot judge the old dependency again before it is replaced.
                self.backend.requeue([key], start_now=True, hold=True)
            self.backend.update_dependency(key, dependency)
            if info.state is JobState.CANCELLED or left_held:
                self.backend.release([key])
        except CommandError as exc:
            self.failed(key, node.key, "rewire", exc)
            return True
        # Counted as a retry of this task too, so that its own cancelled dependents are revived.
        why = f"its parent {', '.join(parents)} was retried"
        self.record(Rewired(task=key, node=node.key, why=why, t=self.clock()))
        return True

    def lift_begin_time(self, node: JobNode, key: str, info: JobInfo) -> bool:
        """Slurm requeued it itself (a node failed under it) and holds it ~120 s; the node is gone,
        so let it start elsewhere now. Once per restart."""
        if not (info.state is JobState.PENDING and info.reason == "BeginTime" and (info.restarts or 0) > 0):
            return False
        marker = f"{key}#{info.restarts}"
        if marker in self.state.released:
            return True
        try:
            self.backend.update_begin_now(key)
        except CommandError as exc:
            self.failed(key, node.key, "release", exc)
            return True
        why = f"Slurm requeued it (restart {info.restarts}); its 2-minute hold was lifted"
        self.record(Released(task=key, node=node.key, marker=marker, why=why, t=self.clock()))
        return True

    def apply_policy(self, node: JobNode, index: int | None, key: str, info: JobInfo) -> None:
        stage = self.plan.stages[node.stage]
        obs = policy.Observed(
            info.state,
            info.exit_code,
            info.reason,
            info.nodes,
            info.cancelled_by,
            requeueable=stage.requeue is not False,
            mem=self.state.mem.get(node.key) or stage.resources.mem,
        )
        if info.state is JobState.OUT_OF_MEMORY:
            done_before = self.state.oom[(node.key, index)]
        else:  # earlier preemptions of the task moved it to new jobs: they count too
            done_before = self.state.requeues[key] + self.state.preempted[(node.key, index)]
        decision = policy.decide(obs, stage.retry, done_before)
        if decision.act is policy.Act.RESUBMIT:
            if decision.mem:
                self.bigger.setdefault(node.key, {})[index] = decision.mem
            else:
                self.again.setdefault(node.key, set()).add(index)
            self.retrying.add(key)
        elif decision.act is policy.Act.REQUEUE:
            self.requeue(node, key, decision)
        elif decision.act is policy.Act.GIVE_UP and key not in self.state.gave_up:
            self.record(GaveUp(task=key, node=node.key, why=decision.why, t=self.clock()))

    def requeue(self, node: JobNode, key: str, decision: policy.Decision) -> None:
        try:
            self.backend.requeue([key], start_now=True)
        except CommandError as exc:
            self.record(RequeueFailed(task=key, node=node.key, why=one_line(exc), t=self.clock()))
            return
        exclude = decision.exclude_node
        if exclude:
            try:
                self.backend.exclude_nodes(key, [exclude])
            except CommandError as exc:
                # Requeued all the same (a second requeue of a pending task would fail).
                self.failed(key, node.key, "exclude_node", exc)
                exclude = None
        self.record(Requeued(task=key, node=node.key, why=decision.why, exclude=exclude, t=self.clock()))
        self.retrying.add(key)

    def resubmit_moved(self) -> None:
        """Out of memory: a new job per node for those tasks, with the larger request (the largest
        asked for among them); preempted: a new job per node with the same request. Their
        dependents are revived on the next ticks like a requeue's."""
        if self.bigger:
            mem = {n: max(t.values(), key=lambda m: int(m.rstrip("M"))) for n, t in self.bigger.items()}
            self._resubmit(self.bigger, "OUT_OF_MEMORY", mem)
        if self.again:
            self._resubmit(self.again, "PREEMPTED", None)

    def _resubmit(self, tasks: Mapping[str, Iterable[int | None]], cause: str, mem: dict[str, str] | None) -> None:
        chosen = {n: sorted(t, key=lambda i: -1 if i is None else i) for n, t in tasks.items()}

        def refused(node_key: str, exc: CommandError) -> None:
            # Not resubmitted: its tasks still show how they ended, so the next tick tries again.
            self.failed(f"{len(chosen[node_key])} task(s) of {node_key}", node_key, "resubmit", exc)

        new_ids = resubmit(
            self.store,
            self.backend,
            self.plan,
            self.state,
            self.jobs,
            chosen,
            why=cause,
            mem=mem,
            on_error=refused,
            clock=self.clock,
        )
        for node_key, job_id in new_ids.items():
            # Shown with the new job's id (and the memory); the log has the `resubmitted` event itself.
            size = f" with mem={mem[node_key]}" if mem else " as a new job"
            self.actions.append(
                Resubmitted(
                    task=job_id,
                    node=node_key,
                    indices=tuple(chosen[node_key]),
                    job_id=job_id,
                    mem=mem[node_key] if mem else None,
                    why=f"{cause}: {len(chosen[node_key])} task(s) resubmitted{size}",
                    t=self.clock(),
                )
            )


def held(info: JobInfo) -> bool:
    """Pending with priority zero (`requeuehold`, `scontrol hold`): Slurm waits for a `release`."""
    return info.state is JobState.PENDING and (info.reason or "").startswith("JobHeld")


def one_line(exc: BaseException) -> str:
    """An exception as one line for the event log (a CommandError: the command and Slurm's message)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CommandError) else f"{type(exc).__name__}: {text}"
