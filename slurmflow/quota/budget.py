"""Whether a campaign fits what its accounts have left, judged before anything is submitted: the
GPU-hour budget and peak GPUs of each account it charges (`fit`), and the submit limits
that every array task counts against. `launch` refuses what cannot fit (unless forced); `plan`
says that it would. The command line only renders the verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slurmflow.errors import SlurmflowError
from slurmflow.model import Plan
from slurmflow.planning.limits import submit_room
from slurmflow.quota.fit import Fit, fit
from slurmflow.slurm.accounting import GPU_TRES, Usage

if TYPE_CHECKING:
    from slurmflow.backends.base import Accounting


@dataclass(frozen=True)
class Verdict:
    fits: list[Fit] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # what launch refuses unless --force
    notes: list[str] = field(default_factory=list)  # throttling, estimates that leave stages out


def charged(plan: Plan, usage: Sequence[Usage], me: str, *, gpus_only: bool) -> dict[str, list[str]]:
    """account -> the stages that charge it (a stage without --account: the user's default)."""
    default = next((u.account for u in usage if u.user == me and u.default), None)
    by_account: dict[str, list[str]] = {}
    for name, stage in plan.stages.items():
        if gpus_only and not stage.resources.gpus:
            continue
        account = stage.resources.account or default
        if account:
            by_account.setdefault(account, []).append(name)
    return by_account


def submit_refusals(plan: Plan, usage: Sequence[Usage], me: str) -> list[str]:
    """Accounts whose submit limits (MaxSubmitJobs, GrpSubmitJobs) leave no room for the campaign's
    tasks (every array task counts): Slurm would refuse the submissions that do not fit."""
    out = []
    for account, stages in charged(plan, usage, me, gpus_only=False).items():
        tasks = sum(plan.stage_tasks(s) for s in stages)
        room = submit_room(usage, me, account)
        if room is not None and tasks > room[1]:
            out.append(
                f"this campaign queues {tasks:,} tasks on account {account} (every array task counts), but "
                f"{room[0]}: room for {room[1]:,}; sweep fewer trials, wait for jobs to finish, or pass --force "
                "(Slurm refuses what does not fit, and `slurmflow resume RUN` submits it later)"
            )
    return out


def campaign_fit(plan: Plan, usage: Sequence[Usage], me: str) -> list[Fit]:
    """The campaign's GPU stages against each account they charge."""
    return [
        fit(plan, account, me, usage, stages) for account, stages in charged(plan, usage, me, gpus_only=True).items()
    ]


def judge(plan: Plan, accounting: Accounting, user: str | None = None) -> Verdict:
    """The campaign against its accounts; an empty verdict where Slurm keeps no accounting to ask
    (then Slurm alone decides)."""
    me = user or accounting.whoami()
    try:
        usage = accounting.usage()
    except SlurmflowError:
        return Verdict()
    fits = campaign_fit(plan, usage, me)
    refusals = submit_refusals(plan, usage, me) + [f.refusal() for f in fits if f.over_budget]
    notes = []
    for f in fits:
        if f.throttled:
            notes.append(f.warning())
        if f.unbounded and f.gpu_hours_left is not None:
            notes.append(f"{', '.join(f.unbounded)} set no time limit: their GPU-hours are not in the estimate")
    return Verdict(fits, refusals, notes)


def for_search(
    verdict: Verdict, plan: Plan, trial_gpu_hours: float | None, cap: float | None
) -> tuple[Verdict, float | None]:
    """A search's verdict and GPU-hour budget. A search asks for trials while the budget allows,
    so a worst case past what an account has left is no refusal: the budget becomes what is left
    (less the closing stages' share), the tighter of it and `cap` (search.max_gpu_hours). It is
    refused only when not even one trial's worst case fits. Returns (verdict, budget)."""
    over = [f for f in verdict.fits if f.over_budget]
    if not over or not trial_gpu_hours:
        return verdict, cap
    tight = min(over, key=lambda f: f.gpu_hours_left or 0.0)
    closing = max(0.0, tight.gpu_hours - plan.n_trials * trial_gpu_hours)  # the stages after the search
    left = (tight.gpu_hours_left or 0.0) - closing
    refusals = [r for r in verdict.refusals if r not in {f.refusal() for f in over}]
    notes = list(verdict.notes)
    if left < trial_gpu_hours - 1e-9:
        refusals.append(
            f"one trial may take {trial_gpu_hours:.2f} GPU-hours (GPUs x time limit) and {tight.budget_by} has "
            f"{tight.gpu_hours_left or 0.0:.2f} left (GrpTRESMins {GPU_TRES}), {closing:.2f} of them for the "
            "stages after the search: shorten time limits, ask your admin for more, or pass --force"
        )
        return Verdict(verdict.fits, refusals, notes), cap
    budget = left if cap is None else min(cap, left)
    if cap is None or left < cap:
        notes.append(
            f"the search's worst case ({tight.gpu_hours:.2f} GPU-hours) is past the {tight.gpu_hours_left or 0.0:.2f} "
            f"{tight.budget_by} has left: it asks for trials while they fit in {budget:.2f} GPU-hours"
        )
    return Verdict(verdict.fits, refusals, notes), budget
