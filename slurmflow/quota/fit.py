"""Does a campaign fit? Its worst-case GPU-hours and peak GPUs against what the account and the
user's association have left. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slurmflow.model import Plan
from slurmflow.slurm.accounting import GPU_TRES, Usage


@dataclass(frozen=True)
class Fit:
    account: str
    gpu_hours: float  # the campaign's worst case: tasks x GPUs x time limit
    peak_gpus: int
    gpu_hours_left: float | None  # the tightest budget over the account and my association
    budget_by: str | None  # which association's budget that is
    gpus_cap: int | None
    gpus_in_use: int
    cap_by: str | None
    unbounded: tuple[str, ...] = ()  # stages without a time limit: their GPU-hours are unknown

    @property
    def over_budget(self) -> bool:
        return self.gpu_hours_left is not None and self.gpu_hours > self.gpu_hours_left + 1e-9

    @property
    def throttled(self) -> bool:
        return self.gpus_cap is not None and self.peak_gpus > self.gpus_cap

    def refusal(self) -> str:
        return (
            f"this campaign needs up to {self.gpu_hours:.2f} GPU-hours (tasks x GPUs x time limit), but "
            f"{self.budget_by} has {self.gpu_hours_left:.2f} GPU-hours of budget left (GrpTRESMins {GPU_TRES}); "
            "shorten time limits, sweep fewer trials, ask your admin for more, or pass --force to submit anyway "
            "(Slurm will hold what does not fit)"
        )

    def warning(self) -> str:
        free = max(0, (self.gpus_cap or 0) - self.gpus_in_use)
        waves = -(-self.peak_gpus // max(1, self.gpus_cap or 1))
        return (
            f"{self.cap_by} may use {self.gpus_cap} GPUs at once (GrpTRES {GPU_TRES}, {self.gpus_in_use} in use now, "
            f"{free} free): this campaign's {self.peak_gpus} concurrent GPUs will run in about {waves} waves, "
            "the rest pending with AssocGrpGRES"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "gpu_hours": round(self.gpu_hours, 3),
            "peak_gpus": self.peak_gpus,
            "gpu_hours_left": None if self.gpu_hours_left is None else round(self.gpu_hours_left, 3),
            "budget_by": self.budget_by,
            "gpus_cap": self.gpus_cap,
            "gpus_in_use": self.gpus_in_use,
            "over_budget": self.over_budget,
            "throttled": self.throttled,
        }


def peak_gpus(plan: Plan, stages: set[str] | None = None) -> int:
    """GPUs the campaign could hold at once: per stage, tasks (or max_parallel) x GPUs; stages of
    the same dependency level can overlap, so their peaks add up."""
    level: dict[str, int] = {}
    for name, stage in plan.stages.items():  # stages are in dependency order
        level[name] = 1 + max((level[d.stage] for d in stage.deps if d.stage in level), default=-1)
    per_level: dict[int, int] = {}
    for name, stage in plan.stages.items():
        if stages is not None and name not in stages:
            continue
        tasks = plan.stage_tasks(name)
        if stage.max_parallel:
            tasks = min(tasks, stage.max_parallel)
        per_level[level[name]] = per_level.get(level[name], 0) + tasks * stage.resources.gpus
    return max(per_level.values(), default=0)


def stage_gpu_hours(plan: Plan) -> dict[str, float]:
    """Per stage with GPUs and a time limit: tasks x GPUs x time limit, the most it can charge."""
    out: dict[str, float] = {}
    for name, stage in plan.stages.items():
        hours = stage.resources.hours()
        if stage.resources.gpus and hours is not None:
            out[name] = plan.stage_tasks(name) * stage.resources.gpus * hours
    return out


def fit(plan: Plan, account: str, user: str, usage: Sequence[Usage], stages: Sequence[str] | None = None) -> Fit:
    """The campaign (or those of its stages that charge `account`) against the tightest budget and
    cap of that account: the account's own and the user's within it (Slurm enforces both)."""
    chosen = set(plan.stages if stages is None else stages)
    hours = sum(h for name, h in stage_gpu_hours(plan).items() if name in chosen)
    mine = [u for u in usage if u.account == account and u.user in ("", user)]
    budgets = [(u.gpu_hours_left, u) for u in mine if u.gpu_hours_left is not None]
    caps = [(u.gpus_limit, u) for u in mine if u.gpus_limit is not None]

    def label(u: Usage) -> str:
        return f"your association with account {account}" if u.user else f"account {account}"

    left, by = min(budgets, key=lambda b: b[0]) if budgets else (None, None)
    cap, cap_u = min(caps, key=lambda c: c[0]) if caps else (None, None)
    return Fit(
        account=account,
        gpu_hours=hours,
        peak_gpus=peak_gpus(plan, chosen),
        gpu_hours_left=left,
        budget_by=label(by) if by else None,
        gpus_cap=cap,
        gpus_in_use=cap_u.gpus_in_use if cap_u else 0,
        cap_by=label(cap_u) if cap_u else None,
        unbounded=tuple(n for n in plan.gpu_hours_unbounded if n in chosen),
    )
