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
from slurmflow.model import JobInfo
from slurmflow.store import RunStore


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
    store.append({"event": "cancelled", "nodes": sorted(nodes), "job_ids": targets, "by": "user", "t": clock()})
    return Cancelled(nodes, tuple(targets))
