"""`slurmflow cancel`: scancel every live job of a run, or of one stage.

The run's jobs are `RunState.jobs`: originals, retries, out-of-memory resubmissions and, for the
whole run, the monitor's own jobs. One batched query picks those still queued or running, so no
finished job's id (perhaps forgotten by the controller after MinJobAge) reaches scancel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from slurmflow.backends.base import Backend
from slurmflow.errors import UsageError
from slurmflow.rundir import events
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobInfo


@dataclass(frozen=True)
class Cancelled:
    nodes: dict[str, str]  # node key -> its original job id (the nodes the cancel covered)
    job_ids: tuple[str, ...]  # the jobs scancel was given: every live one of those nodes


def live(jobs: Sequence[JobInfo]) -> list[str]:
    """The job ids (an array's own id for its tasks) with a task not yet ended, in submission order."""
    return sorted({j.base_id for j in jobs if not j.state.final}, key=int)


def cancel(
    store: RunStore, backend: Backend, *, stage: str | None = None, clock: Callable[[], float] = time.time
) -> Cancelled:
    plan, state = store.plan(), store.state()
    if stage is not None and stage not in plan.stages:
        raise UsageError(f"--stage {stage!r}: no such stage in run {store.run_id} (stages: {', '.join(plan.stages)})")
    nodes = {k: v for k, v in state.submitted.items() if stage is None or plan.node(k).stage == stage}
    ids = state.jobs(plan, stage=stage)
    targets = live(backend.query(ids).jobs) if ids else []
    backend.cancel(targets)
    for event in records(tuple(sorted(nodes)), tuple(targets), clock()):
        store.append(event)
    return Cancelled(nodes, tuple(targets))


def records(nodes: tuple[str, ...], job_ids: tuple[str, ...], t: float) -> list[events.Cancelled]:
    """The cancel as one event, or as several where a large run's lists do not fit one line of
    the log (PIPE_BUF bytes, for appends that never interleave): the reducer takes their union."""
    whole = events.Cancelled(nodes=nodes, job_ids=job_ids, by="user", t=t)
    try:
        events.fit_line(whole)
    except ValueError:
        if len(nodes) + len(job_ids) <= 1:
            raise
        if len(nodes) >= len(job_ids):  # halve the longer list: each part is smaller than the whole
            n = len(nodes) // 2
            return [*records(nodes[:n], job_ids, t), *records(nodes[n:], (), t)]
        j = len(job_ids) // 2
        return [*records(nodes, job_ids[:j], t), *records((), job_ids[j:], t)]
    return [whole]
