"""A campaign's state from one batched query: per stage counts, failures, pending reasons in words.

Pure: (plan, submitted job ids, trial offsets, jobs as Slurm reports them, the run's recorded actions,
clock) -> CampaignStatus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from slurmflow.model import Plan
from slurmflow.rundir import events
from slurmflow.rundir.events import Action
from slurmflow.slurm.types import JobInfo, JobState

# Pending reasons (man squeue, JOB REASON CODES) in a researcher's words.
REASONS: Mapping[str, str] = {
    "Dependency": "waiting for the stages it depends on",
    "DependencyNeverSatisfied": "a dependency failed: it will never run",
    "Priority": "queued behind jobs of higher priority",
    "Resources": "waiting for free nodes or GPUs",
    "BeginTime": "held until its begin time (a requeued job waits about 2 minutes)",
    "JobHeldUser": "held: launched with --hold (`scontrol release <id>` starts it), or a rewire the monitor "
    "finishes on its next tick",
    "JobHeldAdmin": "held by an administrator",
    "JobArrayTaskLimit": "the stage's max_parallel throttle is reached",
    "AssocGrpGRES": "the account's concurrent GPU cap (GrpTRES gres/gpu) is reached",
    "AssocGrpGRESMinutes": "the account's GPU-hour budget (GrpTRESMins gres/gpu) is used up",
    "AssocGrpGRESRunMinutes": "the account's running GPU-minutes cap is reached",
    "AssocMaxGRESPerJob": "the job asks more GPUs than the account allows per job",
    "AssocGrpJobsLimit": "the account's cap on running jobs is reached",
    "AssocMaxJobsLimit": "your cap on running jobs is reached",
    "AssocMaxSubmitJobLimit": "your cap on submitted jobs is reached",
    "QOSGrpGRES": "the QOS's concurrent GPU cap is reached",
    "QOSMaxGRESPerUser": "the QOS's per-user GPU cap is reached",
    "QOSMaxSubmitJobPerUserLimit": "the QOS's per-user cap on submitted jobs is reached",
    "ReqNodeNotAvail": "a node it needs is unavailable (down or drained)",
    "PartitionDown": "its partition is down",
    "NodeDown": "a node it needs is down",
    "JobLaunchFailure": "Slurm could not start its batch step (on Slurm before 23.02: a missing log directory)",
}
QUOTA_REASONS = frozenset(r for r in REASONS if r.startswith(("Assoc", "QOS")))


def exit_text(code: int | None, signal: int | None) -> str:
    """Slurm's 'code:signal' in words: '1', 'signal 53' (0:53: killed before or while it ran), '-'."""
    if signal:
        return f"signal {signal}" if not code else f"{code} (signal {signal})"
    return "-" if code is None else str(code)


# What slurmstepd leaves when the batch step cannot start (its stdout could not be opened, ...):
# squeue's reason JobLaunchFailure while the controller remembers the job, sacct's FAILED 0:53.
LAUNCH_FAILURE_SIGNAL = 53


def launch_failed(state: JobState, reason: str | None, signal: int | None = None) -> bool:
    """The batch step never started the command."""
    if state is not JobState.FAILED:
        return False
    return (reason or "").split(",", 1)[0].strip() == "JobLaunchFailure" or signal == LAUNCH_FAILURE_SIGNAL


def explain(reason: str | None) -> str:
    if not reason or reason == "None":
        return "no reason given"
    head = reason.split(",", 1)[0].strip()
    return REASONS.get(head, reason)


@dataclass(frozen=True)
class TaskRow:
    node: str
    stage: str
    job_id: str  # 123 or 123_4; "-" when not submitted
    state: JobState
    trial: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    nodes: str | None = None
    restarts: int = 0
    log: str | None = None
    signal: int | None = None
    pruned: bool = False  # a search stopped it (CANCELLED in Slurm): shown PRUNED, not a failure

    @property
    def shown_state(self) -> str:
        return "PRUNED" if self.pruned else self.state.name

    @property
    def exit(self) -> str:
        return exit_text(self.exit_code, self.signal)


@dataclass(frozen=True)
class StageStatus:
    stage: str
    total: int
    counts: Mapping[str, int]
    restarts: int
    failures: tuple[TaskRow, ...]
    pending: Mapping[str, int]  # reason -> tasks


@dataclass(frozen=True)
class CampaignStatus:
    run_id: str
    stages: tuple[StageStatus, ...]
    tasks: tuple[TaskRow, ...]
    accounting_available: bool
    elapsed_s: float
    remaining_s: float | None
    not_submitted: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    done: bool = False
    notes: tuple[str, ...] = field(default=())
    actions: tuple[Action, ...] = ()  # what the monitor did (requeued, rewired, gave_up): RunState.actions


def summarise(
    run_id: str,
    plan: Plan,
    submitted: Mapping[str, str],
    jobs: Sequence[JobInfo],
    *,
    logs_dir: str,
    started: float,
    now: float,
    accounting_available: bool = True,
    skipped: Sequence[str] = (),
    actions: Sequence[Action] = (),
    moved: Mapping[tuple[str, int | None], str] | None = None,
    unreadable: Sequence[int] = (),
    pruned: Set[str] = frozenset(),
    searching: bool = False,
) -> CampaignStatus:
    """`searching`: the run's search still asks for trials, so it is not done whatever its tasks."""
    by_id = {j.job_id: j for j in jobs}
    rows: list[TaskRow] = []
    for node in plan.nodes:
        for task in range(node.size) if node.array else [None]:
            job_id = (moved or {}).get((node.key, task)) or submitted.get(node.key)
            if job_id is None:
                rows.append(TaskRow(node.key, node.stage, "-", JobState.UNKNOWN))
                continue
            key = f"{job_id}_{task}" if task is not None else job_id
            info = by_id.get(key)
            log = f"{logs_dir}/{node.log_file(task)}"
            trial = node.offset + task if task is not None else None
            if info is None:
                rows.append(TaskRow(node.key, node.stage, key, JobState.UNKNOWN, trial, log=log))
                continue
            rows.append(
                TaskRow(
                    node.key,
                    node.stage,
                    key,
                    info.state,
                    trial,
                    info.exit_code,
                    info.reason,
                    info.nodes,
                    info.restarts or 0,
                    log,
                    info.signal,
                    key in pruned,
                )
            )
    stages = []
    for stage in plan.stages:
        mine = [r for r in rows if r.stage == stage]
        counts = Counter(r.shown_state for r in mine)
        failures = tuple(r for r in mine if r.state.final and not r.state.succeeded and not r.pruned)
        pending = Counter((r.reason or "None").split(",", 1)[0] for r in mine if r.state is JobState.PENDING)
        stages.append(
            StageStatus(stage, len(mine), dict(counts), sum(r.restarts for r in mine), failures, dict(pending))
        )
    final = [r for r in rows if r.state.final]
    elapsed = max(0.0, now - started)
    remaining = None
    if final and len(final) < len(rows) and elapsed > 0:
        remaining = (len(rows) - len(final)) * elapsed / len(final)
    notes = []
    if unreadable:
        lines = ", ".join(str(n) for n in unreadable[:10]) + (" ..." if len(unreadable) > 10 else "")
        notes.append(
            f"{len(unreadable)} line(s) of the run's events.jsonl could not be read (line {lines}): "
            "what they recorded is not counted here"
        )
    if not accounting_available:
        notes.append(
            "slurmdbd did not answer: showing what the controller knows; jobs it has forgotten show as UNKNOWN"
        )
    return CampaignStatus(
        run_id=run_id,
        stages=tuple(stages),
        tasks=tuple(rows),
        accounting_available=accounting_available,
        elapsed_s=elapsed,
        remaining_s=remaining,
        not_submitted=tuple(n.key for n in plan.nodes if n.key not in submitted and n.key not in skipped),
        skipped=tuple(skipped),
        done=not searching and bool(rows) and all(r.state.final for r in rows if r.job_id != "-"),
        notes=tuple(notes),
        actions=tuple(actions),
    )


def to_dict(status: CampaignStatus, *, tasks: bool = False) -> dict[str, object]:
    doc: dict[str, object] = {
        "run_id": status.run_id,
        "done": status.done,
        "accounting_available": status.accounting_available,
        "elapsed_s": round(status.elapsed_s, 1),
        "remaining_s": None if status.remaining_s is None else round(status.remaining_s, 1),
        "not_submitted": list(status.not_submitted),
        "skipped": list(status.skipped),
        "notes": list(status.notes),
        "actions": [events.to_dict(a) for a in status.actions],
        "stages": [
            {
                "stage": s.stage,
                "tasks": s.total,
                "counts": dict(s.counts),
                "retries": s.restarts,
                "pending": {r: {"tasks": n, "why": explain(r)} for r, n in s.pending.items()},
                "failures": [_row(r) for r in s.failures],
            }
            for s in status.stages
        ],
    }
    if tasks:
        doc["tasks"] = [_row(r) for r in status.tasks]
    return doc


def _why(r: TaskRow) -> str | None:
    if launch_failed(r.state, r.reason, r.signal):
        return explain("JobLaunchFailure")
    return explain(r.reason) if r.state is JobState.PENDING else None


def _row(r: TaskRow) -> dict[str, object]:
    return {
        "node": r.node,
        "stage": r.stage,
        "job_id": r.job_id,
        "trial": r.trial,
        "state": r.shown_state,
        "slurm_state": r.state.name,
        "exit_code": r.exit_code,
        "signal": r.signal,
        "exit": r.exit,
        "reason": r.reason,
        "why": _why(r),
        "nodes": r.nodes,
        "restarts": r.restarts,
        "log": r.log,
    }
