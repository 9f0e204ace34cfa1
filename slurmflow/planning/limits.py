"""Limits Slurm enforces at submission, explained: which limit refused a launch, its number, and how
to go on. Pure: the caller gathers the controller's config and the association usage.

Slurm's own words are terse ("Job violates accounting/QOS policy (job submit limit, user's size
and/or time limits)", or "Slurm temporarily unable to accept job" for a minute before sbatch gives
up), and neither names the limit's value nor says that array tasks count one job each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from slurmflow.errors import ControllerFull, SlurmError
from slurmflow.slurm.accounting import Usage
from slurmflow.slurm.types import ClusterConfig


def size_refusal(tasks: int, *, max_job_count: int | None, max_tasks: int | None) -> str | None:
    """A campaign that can never be queued at once (more tasks than MaxJobCount), or that is bigger
    than the ceiling the user set (--max-tasks, $SLURMFLOW_MAX_TASKS): why, in one line."""
    if max_tasks is not None and tasks > max_tasks:
        return (
            f"this campaign queues {tasks:,} tasks (every array task counts), above the ceiling of {max_tasks:,} "
            "(--max-tasks or $SLURMFLOW_MAX_TASKS): sweep fewer trials, or raise the ceiling"
        )
    if max_job_count is not None and tasks > max_job_count:
        return (
            f"this campaign queues {tasks:,} tasks (every array task counts), more than the controller holds at "
            f"once (MaxJobCount={max_job_count:,}): sweep fewer trials, or launch it in parts"
        )
    return None


def submit_room(usages: Sequence[Usage], user: str | None, account: str | None) -> tuple[str, int] | None:
    """The tightest submit limit that charges this account (the user's MaxSubmitJobs in it, the
    account's GrpSubmitJobs): (which, jobs that may still be queued), or None when unlimited."""
    limits = _submit_limits(usages, user, account)
    if not limits:
        return None
    name, limit, queued = min(limits, key=lambda x: x[1] - x[2])
    return f"{name} and {queued:,} are queued", max(limit - queued, 0)


def _submit_limits(usages: Sequence[Usage], user: str | None, account: str | None) -> list[tuple[str, int, int]]:
    """(which association and limit, limit, jobs queued now) for every submit limit that applies."""
    if account is None:  # no --account: the job goes to the user's default association
        account = next((u.account for u in usages if u.default and u.user and (user is None or u.user == user)), None)
    out: list[tuple[str, int, int]] = []
    for u in usages:
        if u.submit_limit is None or u.account != account:
            continue
        if u.user and user and u.user != user:
            continue
        if u.user:
            out.append((f"your association {u.account}/{u.user} has MaxSubmitJobs={u.submit_limit:,}", *_nums(u)))
        else:
            out.append((f"account {u.account} has GrpSubmitJobs={u.submit_limit:,}", *_nums(u)))
    return out


def _nums(u: Usage) -> tuple[int, int]:
    return (u.submit_limit or 0, u.jobs_submitted)


def refusal_message(
    *,
    run_id: str,
    node: str,
    tasks: int,
    submitted: int,
    total: int,
    cause: SlurmError,
    config: ClusterConfig | None = None,
    usages: Sequence[Usage] = (),
    user: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    qos_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> str:
    """One line: what refused which submission, with the numbers, and the command that resumes.
    `qos_limits`: QOS name -> (MaxSubmitJobsPerUser, GrpSubmitJobs), None where unset."""
    qos_limits = qos_limits or {}
    what = f"Slurm refused {node} ({tasks:,} task{'s' if tasks != 1 else ''})"
    done = f"{submitted} of {total} submissions of the run are queued"
    resume = f"then `slurmflow resume {run_id}` submits the rest, none twice"
    if isinstance(cause, ControllerFull):
        if config is not None:
            limit = (
                f"the controller holds its MaxJobCount of {config.max_job_count:,} jobs (every array task counts, "
                f"and finished or cancelled jobs until MinJobAge, {config.min_job_age_s} s, has passed)"
            )
        else:
            limit = "the controller holds its MaxJobCount of jobs (every array task counts)"
        return f"{what}: {limit}; {done}. Wait for jobs to leave the queue or ask for a higher MaxJobCount, {resume}"
    limits = _submit_limits(usages, user, account)
    for name, (per_user, group) in sorted(qos_limits.items()):
        if qos and name != qos:
            continue
        if per_user is not None:
            limits.append((f"QOS {name} has MaxSubmitJobsPerUser={per_user:,}", per_user, -1))
        if group is not None:
            limits.append((f"QOS {name} has GrpSubmitJobs={group:,}", group, -1))
    if limits:
        said = "; ".join(name + (f" and {queued:,} are queued" if queued >= 0 else "") for name, _, queued in limits)
        rooms = [limit - queued for _, limit, queued in limits if queued >= 0]
        room = f", room for {max(min(rooms), 0):,} more" if rooms else ""
        return (
            f"{what}: {said} (array tasks count one job each{room}); {done}. "
            f"Shrink the sweep, wait for jobs to finish or ask for a higher limit, {resume}"
        )
    slurm = (cause.stderr or cause.stdout).strip().splitlines()
    said = slurm[-1].removeprefix("sbatch: error: ").strip() if slurm else str(cause)
    return f"{what}: an association or QOS limit ({said}); {done}. Check `slurmflow quota`, {resume}"
