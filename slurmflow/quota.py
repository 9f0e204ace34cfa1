"""GPU quotas, pure: the quota file, Slurm's associations and live usage, the difference between
them as sacctmgr commands, and whether a campaign fits what remains.

Enforcement stays Slurm's (resource_limits): slurmflow writes limits with sacctmgr, which refuses
anyone without AdminLevel, and reads usage from the controller's association manager.

Quota file (configs/quota/*.yaml); a field left out is not managed, `unlimited` clears a limit:

    cluster: mini                       # optional: only this cluster's associations
    accounts:
      lab-a:
        gpus: 4                         # GrpTRES=gres/gpu=4: GPUs in use at once
        gpu_hours: 500                  # GrpTRESMins=gres/gpu=30000: the budget
        max_running_jobs: 20            # GrpJobs
        max_submit_jobs: 1000           # GrpSubmitJobs
        qos: [normal]                   # QOS
        users:
          alice: {gpus: 2, max_submit_jobs: 200}   # MaxJobs, MaxSubmitJobs at the user level
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from slurmflow import schema
from slurmflow.errors import UsageError
from slurmflow.model import Plan
from slurmflow.schema import QuotaAccountIn, QuotaFileIn, QuotaLimitsIn

FIELDS = ("gpus", "gpu_hours", "max_running_jobs", "max_submit_jobs", "qos")
# quota-file field -> sacctmgr option for an account's association, and for a user's.
OPTIONS: Mapping[str, tuple[str, str]] = {
    "gpus": ("GrpTRES", "GrpTRES"),
    "gpu_hours": ("GrpTRESMins", "GrpTRESMins"),
    "max_running_jobs": ("GrpJobs", "MaxJobs"),
    "max_submit_jobs": ("GrpSubmitJobs", "MaxSubmitJobs"),
    "qos": ("QOS", "QOS"),
}
GPU_TRES = "gres/gpu"
UNLIMITED = None
SACCTMGR_FORMAT = "format=Cluster,Account,User,GrpTRES,GrpTRESMins,GrpJobs,GrpSubmitJobs,MaxJobs,MaxSubmitJobs,QOS"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+\Z", re.ASCII)

Value = int | tuple[str, ...] | None  # None: unlimited


@dataclass(frozen=True)
class Assoc:
    """One association's limits as Slurm holds them (gpu_hours in GPU-minutes, as Slurm counts)."""

    account: str
    user: str  # "" for the account itself
    limits: Mapping[str, Value]

    @property
    def key(self) -> tuple[str, str]:
        return (self.account, self.user)


@dataclass(frozen=True)
class QuotaFile:
    cluster: str | None
    wanted: Mapping[tuple[str, str], Mapping[str, Value]]  # (account, user) -> managed fields only


@dataclass(frozen=True)
class Change:
    account: str
    user: str
    field: str
    current: Value
    wanted: Value


def _limits(raw: QuotaLimitsIn, where: str) -> dict[str, Value]:
    """The fields a quota file entry manages, in Slurm's units (gpu_hours as GPU-minutes)."""
    out: dict[str, Value] = {}
    for name in FIELDS:
        value = getattr(raw, name)
        if value is None:
            continue  # not managed
        if value == "unlimited":
            out[name] = UNLIMITED
        elif name == "qos":
            qos = [value] if isinstance(value, str) else list(value)
            if not qos or not all(_NAME.match(q) for q in qos):
                raise UsageError(f"{where}.qos: expected a list of QOS names such as [normal]")
            out[name] = tuple(sorted(qos))
        elif name == "gpu_hours":
            out[name] = round(float(value) * 60)
        else:
            out[name] = int(value)
    return out


def parse_file(doc: object) -> QuotaFile:
    """A quota file's content (parsed YAML) -> what it declares, or a one-line UsageError."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("accounts"), Mapping) or not doc["accounts"]:
        raise UsageError("quota file: expected a mapping with `accounts:` (see configs/quota/example.yaml)")
    top = schema.convert({**doc, "accounts": {}}, QuotaFileIn, "")
    if top.cluster is not None and not _NAME.match(top.cluster):
        raise UsageError(f"cluster: {top.cluster!r} is not a Slurm cluster name")
    wanted: dict[tuple[str, str], Mapping[str, Value]] = {}
    for account, body in doc["accounts"].items():
        where = f"accounts.{account}"
        if not isinstance(account, str) or not _NAME.match(account):
            raise UsageError(f"{where}: {account!r} is not a Slurm account name")
        entry = schema.convert({} if body is None else body, QuotaAccountIn, where)
        wanted[(account, "")] = _limits(entry, where)
        for user, limits in (entry.users or {}).items():
            at = f"{where}.users.{user}"
            if not isinstance(user, str) or not _NAME.match(user):
                raise UsageError(f"{at}: {user!r} is not a user name")
            parsed = schema.convert({} if limits is None else limits, QuotaLimitsIn, at)
            wanted[(account, user)] = _limits(parsed, at)
    return QuotaFile(top.cluster, wanted)


def _tres(text: str, name: str = GPU_TRES) -> int | None:
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == name and value:
            return int(value)
    return None


def _int(text: str) -> int | None:
    return int(text) if text.strip() else None


def parse_associations(text: str, cluster: str | None = None) -> list[Assoc]:
    """`sacctmgr --parsable2 --noheader show assoc <SACCTMGR_FORMAT>` -> limits per association."""
    out = []
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 10:
            continue
        clus, account, user, grp_tres, grp_mins, grp_jobs, grp_submit, max_jobs, max_submit, qos = cols[:10]
        if cluster and clus != cluster:
            continue
        limits: dict[str, Value] = {
            "gpus": _tres(grp_tres),
            "gpu_hours": _tres(grp_mins),
            "max_running_jobs": _int(grp_jobs if not user else max_jobs),
            "max_submit_jobs": _int(grp_submit if not user else max_submit),
            "qos": tuple(sorted(q for q in qos.split(",") if q)),
        }
        out.append(Assoc(account, user, limits))
    return out


def diff(quota: QuotaFile, current: Sequence[Assoc], qos_names: Sequence[str] | None = None) -> list[Change]:
    """What must change for Slurm to hold exactly the declared limits. An account or user with no
    association, or an unknown QOS, is an error: slurmflow sets limits, it never creates accounts."""
    have = {a.key: a for a in current}
    changes = []
    for (account, user), fields in quota.wanted.items():
        if (account, user) not in have:
            if user:
                raise UsageError(
                    f"accounts.{account}.users.{user}: {user} has no association with account {account}: "
                    f"add it first (sacctmgr add user {user} account={account})"
                )
            raise UsageError(
                f"accounts.{account}: no such account in Slurm: add it first (sacctmgr add account {account})"
            )
        for name, value in fields.items():
            if name == "qos" and qos_names is not None and isinstance(value, tuple):
                missing = sorted(set(value) - set(qos_names))
                if missing:
                    raise UsageError(
                        f"accounts.{account}: QOS {missing[0]!r} does not exist (known: {', '.join(qos_names)})"
                    )
            now = have[(account, user)].limits.get(name)
            if now != value:
                changes.append(Change(account, user, name, now, value))
    return changes


def _option(change: Change) -> str:
    option = OPTIONS[change.field][1 if change.user else 0]
    value = change.wanted
    if change.field == "qos":
        return f"{option}={','.join(value)}" if isinstance(value, tuple) else f"{option}="
    number = -1 if value is None else value
    if change.field in ("gpus", "gpu_hours"):
        return f"{option}={GPU_TRES}={number}"
    return f"{option}={number}"


def commands(changes: Sequence[Change], cluster: str | None = None) -> list[list[str]]:
    """One `sacctmgr -i modify` per association that changes, as argv lists (never a shell)."""
    grouped: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        grouped.setdefault((c.account, c.user), []).append(c)
    out = []
    for (account, user), items in grouped.items():
        where = ["where", f"name={user}", f"account={account}"] if user else ["where", f"name={account}"]
        if cluster:
            where.append(f"cluster={cluster}")
        kind = "user" if user else "account"
        out.append(["sacctmgr", "-i", "modify", kind, *where, "set", *(_option(c) for c in items)])
    return out


def describe(field: str, value: Value) -> str:
    if value is None:
        return "unlimited"
    if field == "gpu_hours" and isinstance(value, int):
        return f"{value / 60:g} GPU-h"
    if isinstance(value, tuple):
        return ",".join(value) or "-"
    return str(value)


# --- live usage: `scontrol show assoc_mgr flags=assoc` --------------------------------------------

_PAIR = re.compile(r"([\w/]+)=(\S*)")
_LIMIT_USAGE = re.compile(r"^(N|-?\d+)\((-?[\d.]+)\)$")


@dataclass(frozen=True)
class Usage:
    """An association's GPU limits next to what it uses now (limit None: unlimited)."""

    account: str
    user: str
    gpus_limit: int | None = None
    gpus_in_use: int = 0
    gpu_minutes_limit: int | None = None
    gpu_minutes_used: float = 0.0
    gpu_minutes_committed: float = 0.0  # what running jobs may still use up to their time limits
    jobs_limit: int | None = None
    jobs_running: int = 0
    submit_limit: int | None = None
    jobs_submitted: int = 0
    default: bool = False  # the user's default association (DefAssoc): where jobs without --account go
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def gpu_hours_left(self) -> float | None:
        if self.gpu_minutes_limit is None:
            return None
        # Slurm's `safe` enforcement starts a job only if it can finish within the budget, counting
        # what running jobs may still use (GrpTRESRunMins): so does this.
        return max(0.0, (self.gpu_minutes_limit - self.gpu_minutes_used - self.gpu_minutes_committed) / 60)

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "user": self.user or None,
            "gpus": {"limit": self.gpus_limit, "in_use": self.gpus_in_use},
            "gpu_hours": {
                "limit": None if self.gpu_minutes_limit is None else round(self.gpu_minutes_limit / 60, 3),
                "used": round(self.gpu_minutes_used / 60, 3),
                "committed_by_running_jobs": round(self.gpu_minutes_committed / 60, 3),
                "left": None if self.gpu_hours_left is None else round(self.gpu_hours_left, 3),
            },
            "running_jobs": {"limit": self.jobs_limit, "in_use": self.jobs_running},
            "submitted_jobs": {"limit": self.submit_limit, "in_use": self.jobs_submitted},
        }


def _split(value: str) -> tuple[int | None, float]:
    m = _LIMIT_USAGE.match(value)
    if not m:
        return None, 0.0
    return (None if m.group(1) == "N" else int(m.group(1))), float(m.group(2))


def _tres_usage(value: str, name: str = GPU_TRES) -> tuple[int | None, float]:
    for part in value.split(","):
        key, _, rest = part.partition("=")
        if key == name:
            return _split(rest)
    return None, 0.0


def parse_assoc_mgr(text: str) -> list[Usage]:
    """Records of `scontrol show assoc_mgr flags=assoc`: `limit(usage)` pairs, N for no limit;
    GrpTRESMins usage is in TRES-minutes, GrpTRESRunMins what running jobs have left."""
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("ClusterName="):
            records.append({})
        if records:
            for key, value in _PAIR.findall(line):
                records[-1].setdefault(key, value)
    out = []
    for rec in records:
        user = re.sub(r"\(\d+\)$", "", rec.get("UserName", ""))
        gpus, gpus_used = _tres_usage(rec.get("GrpTRES", ""))
        minutes, minutes_used = _tres_usage(rec.get("GrpTRESMins", ""))
        committed = _tres_usage(rec.get("GrpTRESRunMins", ""))[1]
        # A user's limits are MaxJobs/MaxSubmitJobs (empty when unset); its counts are in Grp* too.
        jobs, running = _split(rec.get("GrpJobs", ""))
        submit, submitted = _split(rec.get("GrpSubmitJobs", ""))
        if user:
            jobs = _split(rec.get("MaxJobs", ""))[0]
            submit = _split(rec.get("MaxSubmitJobs", ""))[0]
        out.append(
            Usage(
                account=rec.get("Account", ""),
                user=user,
                gpus_limit=gpus,
                gpus_in_use=int(gpus_used),
                gpu_minutes_limit=minutes,
                gpu_minutes_used=minutes_used,
                gpu_minutes_committed=committed,
                jobs_limit=jobs,
                jobs_running=int(running),
                submit_limit=submit,
                jobs_submitted=int(submitted),
                default=bool(user) and rec.get("DefAssoc") == "Yes",
            )
        )
    return out


# --- does a campaign fit? -----------------------------------------------------------------------


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


def admin_refusal(user: str, level: str) -> str:
    return (
        f"{user} has Slurm AdminLevel {level or 'None'}: changing limits needs AdminLevel Operator or "
        f"Administrator in Slurm accounting (an administrator grants it: sacctmgr modify user {user} set "
        "AdminLevel=Operator); nothing was applied"
    )


def is_admin(level: str) -> bool:
    return level.strip().lower() in ("administrator", "operator")
