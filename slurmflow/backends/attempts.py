"""A scheduler task's attempts as sacct lists them: the current one, those a requeue ended, history's selection.

Times are kept in scheduler time (seconds since the scheduler's time 0) and reported in epoch
seconds, as sacct reports them: the fake's epoch is 0, the local engine's the wall-clock time of
its time 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from slurmflow.slurm import history as slurm_history
from slurmflow.slurm.types import Attempt, JobState

if TYPE_CHECKING:
    from slurmflow.backends.sim import Task


def current(t: Task, state: JobState, end: float | None) -> Attempt:
    """The task's current attempt, in scheduler time, as it stands or as it ends in `state`: a
    node and GPUs if it started, an exit code if it ended."""
    ran = t.node is not None
    return Attempt(
        job_id=t.job_id,
        state=state,
        submit=t.submitted,
        start=t.started if ran else None,
        end=end,
        node=t.node,
        gpus=t.gpus if ran else 0,
        restart=t.restarts,
        exit_code=t.exit_code if end is not None else None,
        signal=t.signal if end is not None else None,
    )


def close(t: Task, ended_as: JobState, now: float) -> None:
    """At a requeue: the attempt that ends is kept, in the state that ended it, with its real end
    where it had ended before (Slurm's accounting would say the requeue time); the next one is
    queued at `now`."""
    t.attempts.append(current(t, ended_as, now if t.finished is None else t.finished))
    t.submitted, t.finished = now, None


def history(tasks: Iterable[Task], job_ids: Sequence[str], epoch: float) -> tuple[Attempt, ...]:
    """Each task's past attempts, then its current one, in epoch seconds; ids are read as sacct
    reads them (slurm_history.select)."""
    ordered = sorted(tasks, key=lambda t: (int(t.array_job_id or t.job_id), t.index or 0))
    every = (a for t in ordered for a in (*t.attempts, current(t, t.state, t.finished)))
    return slurm_history.select((shifted(a, epoch) for a in every), job_ids)


def shifted(a: Attempt, by: float) -> Attempt:
    """An attempt's times moved from scheduler time to epoch seconds."""

    def at(t: float | None) -> float | None:
        return None if t is None else t + by

    return replace(a, submit=at(a.submit), start=at(a.start), end=at(a.end))
