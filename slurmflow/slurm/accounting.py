"""Slurm accounting as Slurm prints it: association limits (`sacctmgr show assoc`), live usage
(`scontrol show assoc_mgr`), and AdminLevel. Pure parsers; gpu_hours in GPU-minutes, as Slurm counts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

GPU_TRES = "gres/gpu"
SACCTMGR_FORMAT = "format=Cluster,Account,User,GrpTRES,GrpTRESMins,GrpJobs,GrpSubmitJobs,MaxJobs,MaxSubmitJobs,QOS"

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


def admin_refusal(user: str, level: str) -> str:
    return (
        f"{user} has Slurm AdminLevel {level or 'None'}: changing limits needs AdminLevel Operator or "
        f"Administrator in Slurm accounting (an administrator grants it: sacctmgr modify user {user} set "
        "AdminLevel=Operator); nothing was applied"
    )


def is_admin(level: str) -> bool:
    return level.strip().lower() in ("administrator", "operator")
