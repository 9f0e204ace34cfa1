"""`slurmflow admin quota apply` as library calls: what would change (propose), whether this user
may change it (permitted), and the change itself, verified against Slurm afterwards (apply).
Enforcement stays Slurm's: sacctmgr refuses anyone without AdminLevel, and nothing here widens it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import NotPermitted, SlurmflowError, UsageError
from slurmflow.quota import file as quota
from slurmflow.slurm.accounting import admin_refusal, is_admin


@dataclass(frozen=True)
class Proposal:
    path: str
    declared: quota.QuotaFile
    changes: list[quota.Change]
    commands: list[list[str]]  # the sacctmgr argv lists that make Slurm hold the declared limits

    def to_dict(self, *, applied: bool = False) -> dict[str, object]:
        return {
            "file": self.path,
            "changes": [
                {
                    "account": c.account,
                    "user": c.user or None,
                    "field": c.field,
                    "current": c.current,
                    "declared": c.wanted,
                }
                for c in self.changes
            ],
            "commands": [shlex.join(a) for a in self.commands],
            "applied": applied,
        }


def propose(path: str, backend: SlurmCLI) -> Proposal:
    declared = quota.load(path)
    assocs = backend.associations(declared.cluster)
    if declared.cluster and not assocs and backend.associations():
        # Every account would read "no such account" when the file names a cluster this
        # accounting does not hold: the cluster is what is wrong.
        raise UsageError(
            f"cluster: {declared.cluster!r}: Slurm's accounting holds no association on that cluster: "
            "fix its name (sacctmgr show cluster) or leave cluster out"
        )
    changes = quota.diff(declared, assocs, backend.qos_names())
    return Proposal(path, declared, changes, quota.commands(changes, declared.cluster))


def check_permitted(backend: SlurmCLI) -> None:
    """Refused before any sacctmgr call unless Slurm gives this user AdminLevel Operator or
    Administrator (or it is root): the same rule sacctmgr applies, said up front in one line."""
    me = backend.whoami()
    level = backend.admin_level(me)
    if me != "root" and not is_admin(level):
        raise NotPermitted(admin_refusal(me, level))


def apply(proposal: Proposal, backend: SlurmCLI) -> None:
    for argv in proposal.commands:
        backend.modify(argv)
    left = quota.diff(proposal.declared, backend.associations(proposal.declared.cluster))
    if left:
        raise SlurmflowError(
            f"sacctmgr ran, but {len(left)} limits still differ (first: {left[0]}); check sacctmgr show assoc"
        )
