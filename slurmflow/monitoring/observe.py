"""Reading a run as it stands: its campaign status (the event log plus one batched query), the
refreshes of `status --watch`, and where a task's log is (or why it has none)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from slurmflow.backends.base import Backend
from slurmflow.errors import SlurmflowError, UsageError
from slurmflow.model import JobNode
from slurmflow.monitoring.status import CampaignStatus, exit_text, explain, launch_failed, summarise
from slurmflow.rundir.state import reduce
from slurmflow.rundir.store import RunStore

# `status --watch`: the refresh interval doubles while nothing changes, up to this.
MAX_WATCH_INTERVAL_S = 60.0


def campaign(store: RunStore, backend: Backend, clock: Callable[[], float] = time.time) -> CampaignStatus:
    events, unreadable = store.read_events()
    plan, state = store.plan(), reduce(events)
    ids = state.jobs(plan, holding=True)
    result = backend.query(ids) if ids else None
    now = clock()
    return summarise(
        store.run_id,
        plan,
        state.submitted,
        result.jobs if result else (),
        logs_dir=str(store.logs_dir),
        started=now if state.started is None else state.started,
        now=now,
        accounting_available=result.accounting_available if result else True,
        skipped=sorted(state.skipped),
        actions=state.actions,  # rundir.state.SHOWN: requeues, rewires, refused actions, idle GPUs, ...
        moved=state.moved,
        unreadable=unreadable,
        pruned=state.pruned_tasks,
        searching=store.has_search() and not state.search_done,
    )


def watch(
    store: RunStore,
    backend: Backend,
    interval: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[CampaignStatus]:
    """One status per refresh until the campaign is done: one batched query each, the interval
    doubling (up to MAX_WATCH_INTERVAL_S) while no task changes."""
    wait, last = interval, None
    while True:
        st = campaign(store, backend, clock)
        yield st
        if st.done:
            return
        snapshot = [(t.job_id, t.state) for t in st.tasks]
        wait = min(MAX_WATCH_INTERVAL_S, wait * 2) if snapshot == last else interval
        last = snapshot
        sleep(wait)


@dataclass(frozen=True)
class TaskLog:
    node: JobNode
    index: int | None  # the array task index within the node; None for a plain job
    path: Path


def task_log(store: RunStore, stage: str, trial: int | None) -> TaskLog:
    """The log of one task: a stage's trial (per-trial stages) or its only job."""
    plan = store.plan()
    if stage not in plan.stages:
        raise UsageError(f"stage {stage!r}: no such stage in run {store.run_id} (stages: {', '.join(plan.stages)})")
    nodes = [n for n in plan.nodes if n.stage == stage]
    if not nodes[0].array:
        return TaskLog(nodes[0], None, store.logs_dir.joinpath(nodes[0].log_file()))
    if trial is None:
        raise UsageError(f"stage {stage} runs one task per trial: give the trial index (0-{plan.n_trials - 1})")
    if not 0 <= trial < plan.n_trials:
        raise UsageError(f"trial {trial}: out of range 0-{plan.n_trials - 1}")
    node = next(n for n in nodes if n.offset <= trial < n.offset + n.size)
    index = trial - node.offset
    return TaskLog(node, index, store.logs_dir.joinpath(node.log_file(index)))


def why_no_log(store: RunStore, backend: Backend, key: str, index: int | None) -> str:
    """What Slurm says of a task that has no log: not started yet, or ended without ever running."""
    job = store.state().job_of(key, index)
    if job is None:
        return "the task has not been submitted"
    task = f"{job}_{index}" if index is not None else job
    try:
        info = backend.query([task]).by_id().get(task)
    except SlurmflowError:
        info = None
    if info is None:
        return "the task has not started"
    if not info.state.final:
        return f"task {task} is {info.state.name} and has not started yet"
    said = f"task {task} ended {info.state.name} (exit {exit_text(info.exit_code, info.signal)}) without writing a log"
    if launch_failed(info.state, info.reason, info.signal):
        said += f": {explain('JobLaunchFailure')}"
    return said
