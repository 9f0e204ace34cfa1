"""What a run's event log says, folded into one state: `reduce(events) -> RunState`.

Pure: no I/O, no clock; the same events give the same state. Every reader of the log (status,
monitor, retry, cancel, rewire, usage) reads this state instead of walking raw events, and a
writer that acts on a state it holds folds its own new event in with `RunState.apply`, so the
state it goes on with is the one a fresh read of the log would give.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from slurmflow.model import Plan
from slurmflow.rundir.events import (
    Action,
    ActionFailed,
    Asked,
    Cancelled,
    ControllerBusy,
    ControllerGone,
    Event,
    GaveUp,
    GpuIdle,
    Intent,
    LaunchComplete,
    MonitorJob,
    Pruned,
    Refused,
    Released,
    Requeued,
    RequeueFailed,
    RescheduleFailed,
    Resubmitted,
    Rewired,
    SearchDone,
    Skipped,
    Submitted,
    TaskEvent,
    TickFailed,
    Told,
)

Task = tuple[str, int | None]  # (node key, array index; None for a single job)

# What `status` lists as the monitor's (and idle-GPU rules') actions, latest last.
SHOWN: tuple[type[TaskEvent], ...] = (
    Requeued,
    Rewired,
    GaveUp,
    RequeueFailed,
    ActionFailed,  # a monitor action Slurm refused: tried again on a later tick
    TickFailed,  # a monitor job's tick raised: its successor was submitted all the same
    RescheduleFailed,  # the monitor job's chain ended: Slurm refused its successor
    Resubmitted,
    GpuIdle,
    Pruned,
    SearchDone,
)


def task_index(task_key: str) -> int | None:
    """The array index in Slurm's id of a task (`123_4` -> 4; `123` -> None)."""
    _, sep, idx = task_key.partition("_")
    return int(idx) if sep and idx.isdigit() else None


@dataclass
class RunState:
    """Everything the event log says about a run."""

    # Submission: which nodes were submitted (and as which job), which were only intended (a crash
    # or an ambiguous answer between the intent and the job id), which could never run.
    submitted: dict[str, str] = field(default_factory=dict)
    intents: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    complete: bool = False  # the submitter walked the whole plan
    started: float | None = None  # the time of the first event that has one
    # Tasks resubmitted by `slurmflow retry` or the monitor (out of memory): (node, array index or
    # None) -> the job that now holds it.
    moved: dict[Task, str] = field(default_factory=dict)
    # Every job each node's tasks were resubmitted as, in order: `moved` keeps only the latest.
    resubmissions: dict[str, list[str]] = field(default_factory=dict)
    moves: dict[Task, list[str]] = field(default_factory=dict)  # each task's resubmissions, in order
    mem: dict[str, str] = field(default_factory=dict)  # node -> memory of its latest resubmission
    monitor_jobs: list[str] = field(default_factory=list)  # `monitor --as-job`, each link of the chain
    # Retries of each task so far (requeues, rewires, resubmissions), and per node in all.
    retried: Counter[Task] = field(default_factory=Counter)
    node_retried: Counter[str] = field(default_factory=Counter)
    oom: Counter[Task] = field(default_factory=Counter)  # out-of-memory resubmissions of each task
    preempted: Counter[Task] = field(default_factory=Counter)  # resubmissions after a preemption
    requeues: Counter[str] = field(default_factory=Counter)  # Slurm task id -> monitor requeues
    rewires: Counter[str] = field(default_factory=Counter)  # Slurm task id -> rewires done
    rewiring: set[str] = field(default_factory=set)  # tasks whose last rewire failed part-way (maybe held)
    gave_up: set[str] = field(default_factory=set)  # tasks the monitor reported it will not retry
    released: set[str] = field(default_factory=set)  # "task#restart": Slurm's hold lifted for that restart
    failures: list[ActionFailed] = field(default_factory=list)  # actions Slurm refused
    gpu_idle: list[GpuIdle] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)  # the SHOWN kinds, in order
    cancelled: set[str] = field(default_factory=set)  # nodes a `slurmflow cancel` covered
    cancelled_jobs: set[str] = field(default_factory=set)
    # A `search:` study: trials asked for, told (trial -> Optuna state), pruned (trial -> its
    # Slurm task ids), and whether asking has ended.
    asked: set[int] = field(default_factory=set)
    told: dict[int, str] = field(default_factory=dict)
    pruned: dict[int, tuple[str, ...]] = field(default_factory=dict)
    search_done: bool = False

    @property
    def pruned_tasks(self) -> set[str]:
        return {t for tasks in self.pruned.values() for t in tasks}

    def apply(self, ev: Event) -> None:
        """Fold one event in (the reducer's step)."""
        if self.started is None and ev.t is not None:
            self.started = ev.t
        if isinstance(ev, SHOWN):
            self.actions.append(ev)
        match ev:
            case Intent():
                self.intents.add(ev.node)
            case Submitted():
                self.submitted[ev.node] = ev.job_id
                self.intents.discard(ev.node)
            case Skipped():
                self.skipped.add(ev.node)
                self.intents.discard(ev.node)
            case LaunchComplete():
                self.complete = True
            case Resubmitted():
                for index in ev.indices:
                    self.moved[(ev.node, index)] = ev.job_id
                    self.moves.setdefault((ev.node, index), []).append(ev.job_id)
                    self._retry((ev.node, index))
                    if ev.out_of_memory:
                        self.oom[(ev.node, index)] += 1
                    elif ev.preempted:
                        self.preempted[(ev.node, index)] += 1
                self.resubmissions.setdefault(ev.node, []).append(ev.job_id)
                if ev.mem:
                    self.mem[ev.node] = ev.mem
            case MonitorJob():
                if ev.job_id:
                    self.monitor_jobs.append(ev.job_id)
            case Requeued():
                self.requeues[ev.task] += 1
                self._retry((ev.node, task_index(ev.task)))
            case Rewired():
                self.rewires[ev.task] += 1
                self.rewiring.discard(ev.task)
                self._retry((ev.node, task_index(ev.task)))
            case ActionFailed():
                self.failures.append(ev)
                if ev.action == "rewire":
                    self.rewiring.add(ev.task)
            case GaveUp():
                self.gave_up.add(ev.task)
            case Released():
                self.released.add(ev.marker)
            case GpuIdle():
                self.gpu_idle.append(ev)
            case Cancelled():
                self.cancelled.update(ev.nodes)
                self.cancelled_jobs.update(ev.job_ids)
            case Asked():
                self.asked.update(ev.trials)
            case Told():
                self.told[ev.trial] = ev.state
            case Pruned():
                self.pruned[ev.trial] = ev.tasks
            case SearchDone():
                self.search_done = True
            case ControllerBusy() | ControllerGone() | Refused() | RequeueFailed() | TickFailed() | RescheduleFailed():
                pass  # shown (or logged) only: they change no state
            case _:
                _unhandled(ev)

    def _retry(self, task: Task) -> None:
        self.retried[task] += 1
        self.node_retried[task[0]] += 1

    def job_of(self, node: str, index: int | None) -> str | None:
        """The job id now holding a task: its retry's, or the node's original submission."""
        return self.moved.get((node, index)) or self.submitted.get(node)

    def holders(self, node: str, index: int | None) -> list[str]:
        """Every Slurm id a task has run as, oldest first (`123_4`, then `456_4` after a retry)."""
        first = self.submitted.get(node)
        jobs = ([first] if first else []) + self.moves.get((node, index), [])
        return [j if index is None else f"{j}_{index}" for j in jobs]

    def jobs(self, plan: Plan, *, stage: str | None = None, holding: bool = False) -> list[str]:
        """The one answer to "which Slurm jobs belong to this run", in submission order: each node's
        original submission, every resubmission of its tasks (`slurmflow retry`, out of memory) and,
        for the whole run, the monitor's own jobs. With `stage`, only that stage's nodes' jobs. With
        `holding`, only the jobs that hold one of the plan's tasks now (what a query of the tasks
        needs; no monitor job, no job whose every task was resubmitted elsewhere)."""
        nodes = [n for n in plan.nodes if n.key in self.submitted and (stage is None or n.stage == stage)]
        found: set[str] = set()
        if holding:
            for node in nodes:
                found.update(str(self.job_of(node.key, i)) for i in (range(node.size) if node.array else [None]))
        else:
            for node in nodes:
                found.add(self.submitted[node.key])
                found.update(self.resubmissions.get(node.key, ()))
            if stage is None:
                found.update(self.monitor_jobs)
        return sorted(found, key=int)


def _unhandled(ev: NoReturn) -> NoReturn:
    # mypy proves this unreachable: a new kind in events.Event fails type checking until handled.
    raise TypeError(f"no reducer step for event {ev!r}")


def reduce(events: Iterable[Event]) -> RunState:
    state = RunState()
    for ev in events:
        state.apply(ev)
    return state
