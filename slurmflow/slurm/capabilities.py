"""What this cluster's Slurm can do, learned from the cluster itself rather than from its version.

Slurm's commands list what they accept: `sacct --helpformat` and `squeue --helpFormat` print the
fields they know, `sbatch --help` its options. Asking for a field a version lacks fails the whole
command (sacct's `Restarts` exists only since 24.11: on 22.05 to 24.05 every query would die with
`Invalid field requested: "Restarts"`), so query argv is built from what the probe found. Only
behaviours no command lists are read off the version, and an unknown newer version gets the newest
behaviour: a cluster upgraded past what slurmflow has seen keeps working.

A probe is three client-side commands (none of them contacts slurmctld); launch stores the answer in
the run directory (`capabilities.json`) so that status, the monitor and retry never ask again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slurmflow.slurm.types import DepKind

# Fields every supported version (22.05 and later) has; queries never do without them.
SACCT_REQUIRED = (
    "JobID",
    "JobIDRaw",
    "JobName",
    "State",
    "ExitCode",
    "Reason",
    "NodeList",
    "Account",
    "User",
    "Partition",
)
SQUEUE_REQUIRED = (
    "JobArrayID",
    "ArrayJobID",
    "ArrayTaskID",
    "JobID",
    "Name",
    "State",
    "Reason",
    "NodeList",
    "Exit_Code",
    "Account",
    "UserName",
    "Partition",
)
# Asked for where the cluster has them: the restart count of a job (sacct since 24.11; the
# controller's RestartCnt wherever squeue lists it).
SACCT_OPTIONAL = ("Restarts",)
SQUEUE_OPTIONAL = ("RestartCnt",)
# squeue learned --helpFormat after 22.05; where it is missing, the fields are those of 22.05.8
# (verified there: RestartCnt works, and an unknown --Format field does not fail the command but
# prints empty columns, so no query can tell it apart).
SQUEUE_FIELDS_2205 = frozenset((*SQUEUE_REQUIRED, "RestartCnt"))

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_LONG_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def parse_version(text: str) -> tuple[int, int, int]:
    """'slurm 22.05.8' or '24.11.5' -> (22, 5, 8); unreadable -> (0, 0, 0)."""
    m = _VERSION.search(text or "")
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def parse_field_list(text: str) -> frozenset[str]:
    """The column-aligned word list `sacct --helpformat` / `squeue --helpFormat` print."""
    return frozenset(text.split())


def parse_long_options(text: str) -> frozenset[str]:
    """`sbatch --help` -> {'array', 'kill-on-invalid-dep', 'open-mode', ...}."""
    return frozenset(_LONG_OPTION.findall(text))


@dataclass(frozen=True)
class Capabilities:
    """One cluster's answers to the probe. `version` is the client's (the commands' own)."""

    version: str
    sacct_fields: frozenset[str]
    squeue_fields: frozenset[str]
    sbatch_options: frozenset[str]

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    def sacct_query_fields(self) -> tuple[str, ...]:
        return SACCT_REQUIRED + tuple(f for f in SACCT_OPTIONAL if f in self.sacct_fields)

    def squeue_query_fields(self) -> tuple[str, ...]:
        # squeue --Format field names are case-insensitive; --helpFormat prints them mixed.
        known = {f.lower() for f in self.squeue_fields}
        return SQUEUE_REQUIRED + tuple(f for f in SQUEUE_OPTIONAL if f.lower() in known)

    def has_sbatch_option(self, name: str) -> bool:
        """Whether `sbatch --help` lists it. The help omits some options sbatch accepts on every
        supported version (--kill-on-invalid-dep, --open-mode), so only a listed one is proof."""
        return name.lstrip("-") in self.sbatch_options

    @property
    def dependency_kinds(self) -> frozenset[DepKind]:
        """afterok, afternotok, afterany, aftercorr and singleton exist in every supported version
        (aftercorr since 16.05, man sbatch); no command lists them, so this is the one table."""
        return frozenset(DepKind)

    @property
    def creates_output_dirs(self) -> bool:
        """slurmstepd creates a missing --output directory only since 23.02 (SchedMD bug 14865);
        slurmflow creates log directories itself on every version, this only explains a failure."""
        return self.version_tuple >= (23, 2, 0) or self.version_tuple == (0, 0, 0)

    @property
    def rejects_unknown_dependency(self) -> bool:
        """24.11 refuses `afterok:<unknown id>`; 22.05 accepts it and treats it as satisfied, which is
        why the submitter never emits a dependency on a job older than MinJobAge."""
        return self.version_tuple >= (23, 2, 0) or self.version_tuple == (0, 0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sacct_fields": sorted(self.sacct_fields),
            "squeue_fields": sorted(self.squeue_fields),
            "sbatch_options": sorted(self.sbatch_options),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Capabilities:
        return cls(
            version=str(doc["version"]),
            sacct_fields=frozenset(doc["sacct_fields"]),
            squeue_fields=frozenset(doc["squeue_fields"]),
            sbatch_options=frozenset(doc["sbatch_options"]),
        )

    @classmethod
    def from_outputs(cls, *, version: str, sacct_help: str, squeue_help: str | None, sbatch_help: str) -> Capabilities:
        """From the probe's outputs; `squeue_help` None: this squeue has no --helpFormat (22.05)."""
        return cls(
            version=version.strip().split()[-1] if version.strip() else "unknown",
            sacct_fields=parse_field_list(sacct_help),
            squeue_fields=SQUEUE_FIELDS_2205 if squeue_help is None else parse_field_list(squeue_help),
            sbatch_options=parse_long_options(sbatch_help),
        )


# What a cluster is assumed to offer before it has been probed, and what the in-memory and local
# backends report: the fields of every supported version, nothing optional.
BASELINE = Capabilities(
    version="unknown",
    sacct_fields=frozenset(SACCT_REQUIRED),
    squeue_fields=frozenset(SQUEUE_REQUIRED),
    sbatch_options=frozenset(),
)

PROBE_ARGV: Mapping[str, tuple[str, ...]] = {
    "version": ("sbatch", "--version"),
    "sacct_help": ("sacct", "--helpformat"),
    "squeue_help": ("squeue", "--helpFormat"),
    "sbatch_help": ("sbatch", "--help"),
}
