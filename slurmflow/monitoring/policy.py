"""(a task as Slurm reports it, the stage's retry policy, retries already done) -> what to do. Pure.

Infrastructure failures (a node died, the job was preempted) are retried; a program's own failures
are not, unless the stage lists their exit codes. A person's scancel is never undone, and a job
pending on a quota reason is left alone: Slurm will run it when the quota allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from slurmflow.model import RetryPolicy
from slurmflow.slurm.types import JobState
from slurmflow.slurm.units import megabytes

INFRA = frozenset({JobState.NODE_FAIL, JobState.BOOT_FAIL, JobState.PREEMPTED})


class Act(enum.Enum):
    NONE = "none"  # running, pending, done, or not ours to touch
    REQUEUE = "requeue"
    RESUBMIT = "resubmit"  # a new job for the task (with more memory where `mem` says)
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Decision:
    act: Act
    why: str
    exclude_node: str | None = None
    mem: str | None = None  # with RESUBMIT: the new memory request


@dataclass(frozen=True)
class Observed:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    nodes: str | None = None
    cancelled_by: str | None = None
    requeueable: bool = True  # False for jobs submitted --no-requeue (the stage's requeue: false)
    mem: str | None = None  # what the task asked for (its stage's mem)


def decide(task: Observed, retry: RetryPolicy, retries_done: int) -> Decision:
    decision = _decide(task, retry, retries_done)
    if decision.act is Act.REQUEUE and not task.requeueable:
        # Slurm refuses to requeue a --no-requeue job, and a finished job cannot be changed.
        return Decision(
            Act.GIVE_UP, decision.why.split(":")[0] + ": the stage sets requeue: false, so it cannot be retried"
        )
    return decision


def _decide(task: Observed, retry: RetryPolicy, retries_done: int) -> Decision:
    state = task.state
    if not state.final or state is JobState.COMPLETED:
        return Decision(Act.NONE, "not failed")
    if state is JobState.CANCELLED:
        if task.reason == "DependencyNeverSatisfied":
            return Decision(Act.NONE, "cancelled because a dependency failed; revived if its parent is retried")
        return Decision(Act.NONE, "cancelled by a person: never retried")
    if state is JobState.PREEMPTED:
        # A new job, not a requeue: once preempted, a job id keeps ending PREEMPTED after every
        # `scontrol requeue`, even when its next attempt exits 0 (seen on 24.11), so Slurm's own
        # dependencies and every later look would take a finished task for a preempted one.
        if retries_done < retry.infra:
            return Decision(Act.RESUBMIT, f"PREEMPTED: infrastructure, retry {retries_done + 1} of {retry.infra}")
        return Decision(Act.GIVE_UP, f"PREEMPTED: {retry.infra} retries used")
    if state in INFRA:
        if retries_done < retry.infra:
            exclude = task.nodes if retry.exclude_failed_node and state is JobState.NODE_FAIL else None
            return Decision(
                Act.REQUEUE, f"{state.name}: infrastructure, retry {retries_done + 1} of {retry.infra}", exclude
            )
        return Decision(Act.GIVE_UP, f"{state.name}: {retry.infra} retries used")
    if state is JobState.TIMEOUT:
        if retries_done < retry.timeouts:
            return Decision(Act.REQUEUE, f"TIMEOUT: retry {retries_done + 1} of {retry.timeouts}")
        return Decision(Act.GIVE_UP, "TIMEOUT: the stage does not retry time limits (retry.timeouts)")
    if state is JobState.FAILED and task.exit_code in retry.exit_codes:
        if retries_done < retry.exit_retries:
            return Decision(
                Act.REQUEUE,
                f"exit code {task.exit_code} is retryable: retry {retries_done + 1} of {retry.exit_retries}",
            )
        return Decision(Act.GIVE_UP, f"exit code {task.exit_code}: {retry.exit_retries} retries used")
    if state is JobState.OUT_OF_MEMORY:
        if retry.oom_mem_factor is None:
            return Decision(Act.GIVE_UP, "OUT_OF_MEMORY: raise the stage's mem, or set retry.oom_mem_factor")
        if retries_done >= retry.oom_retries:
            return Decision(Act.GIVE_UP, f"OUT_OF_MEMORY: {retry.oom_retries} resubmissions used")
        # task.mem is the current request (already grown by earlier resubmissions): one more factor.
        bigger = scaled_mem(task.mem, retry.oom_mem_factor, retry.oom_mem_cap)
        if bigger is None:
            return Decision(Act.GIVE_UP, f"OUT_OF_MEMORY: already at the cap ({retry.oom_mem_cap}) or no mem set")
        return Decision(Act.RESUBMIT, f"OUT_OF_MEMORY: resubmitted with mem={bigger}", mem=bigger)
    code = "" if task.exit_code is None else f" with exit code {task.exit_code}"
    return Decision(Act.GIVE_UP, f"{state.name}{code}: the program's own failure is not retried (retry.exit_codes)")


def scaled_mem(mem: str | None, factor: float, cap: str | None) -> str | None:
    """The memory request times factor, at most cap; None when there is no room left to grow."""
    if mem is None:
        return None
    want = int(megabytes(mem) * factor)
    if cap is not None:
        want = min(want, megabytes(cap))
    return f"{want}M" if want > megabytes(mem) else None
