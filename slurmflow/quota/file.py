"""The quota file, pure: the admin's declared GPU limits per account and user, and the difference
from what Slurm holds as sacctmgr commands.

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
from dataclasses import dataclass
from pathlib import Path

from slurmflow.errors import UsageError
from slurmflow.experiment import schema
from slurmflow.experiment.schema import QuotaAccountIn, QuotaFileIn, QuotaLimitsIn
from slurmflow.slurm.accounting import GPU_TRES, Assoc, Value

FIELDS = ("gpus", "gpu_hours", "max_running_jobs", "max_submit_jobs", "qos")
# quota-file field -> sacctmgr option for an account's association, and for a user's.
OPTIONS: Mapping[str, tuple[str, str]] = {
    "gpus": ("GrpTRES", "GrpTRES"),
    "gpu_hours": ("GrpTRESMins", "GrpTRESMins"),
    "max_running_jobs": ("GrpJobs", "MaxJobs"),
    "max_submit_jobs": ("GrpSubmitJobs", "MaxSubmitJobs"),
    "qos": ("QOS", "QOS"),
}
UNLIMITED = None
_NAME = re.compile(r"^[A-Za-z0-9_.-]+\Z", re.ASCII)


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


def load(path: str) -> QuotaFile:
    """Read and check a quota file (YAML; OmegaConf interpolation allowed). Bad input is one line."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not Path(path).is_file():
        raise UsageError(f"quota file {path}: no such file")
    try:
        raw = OmegaConf.load(path)
        doc = OmegaConf.to_container(raw, resolve=True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"quota file {path}{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"quota file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError:  # OmegaConf's answer to a file holding a number or a string
        raise UsageError(f"quota file {path}: expected a mapping with `accounts:`") from None
    except OmegaConfBaseException as exc:
        # What the resolver said, not the name of the exception it raised (OmegaConf prefixes it).
        said = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(exc).strip().splitlines()[0])
        raise UsageError(f"quota file {path}: {said}") from None
    except RecursionError:
        raise UsageError(f"quota file {path}: nested too deeply (or a YAML alias refers to itself)") from None
    return parse_file(doc)
