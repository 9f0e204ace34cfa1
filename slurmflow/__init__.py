"""slurmflow: Hydra experiments to Slurm job-array dependency graphs, submitted at once.

The public API: the backends (Slurm's command line, the local engine, the in-memory fake), the
whole exception tree (every error slurmflow raises is a `SlurmflowError`), Slurm's types and the
command runners. The rest of the tree is organised by concern; see the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slurmflow._lazy import exports
from slurmflow._version import __version__

# Imported on first use: a task on a compute node imports `slurmflow.job.task`, which must not pay
# for the backends, the Slurm parsers and the fake scheduler on every start.
_EXPORTS = {
    # in a task: metrics for `slurmflow results`, `report` and `track`
    "log": "slurmflow.rundir.metrics",
    "summary": "slurmflow.rundir.metrics",
    "should_stop": "slurmflow.rundir.metrics",
    "Backend": "slurmflow.backends.base",
    "FakeSlurm": "slurmflow.backends.fake",
    "LocalSlurm": "slurmflow.backends.local",
    "SlurmCLI": "slurmflow.backends.slurm_cli",
    "SlurmflowError": "slurmflow.errors",
    "UsageError": "slurmflow.errors",
    "NotPermitted": "slurmflow.errors",
    "ParseError": "slurmflow.errors",
    "CommandError": "slurmflow.errors",
    "CommandTimeout": "slurmflow.errors",
    "CommandNotFound": "slurmflow.errors",
    "SlurmError": "slurmflow.errors",
    "ControllerUnavailable": "slurmflow.errors",
    "AccountingUnavailable": "slurmflow.errors",
    "SubmissionAmbiguous": "slurmflow.errors",
    "PolicyViolation": "slurmflow.errors",
    "SlurmNotConfigured": "slurmflow.errors",
    "ControllerFull": "slurmflow.errors",
    "SubmissionRefused": "slurmflow.errors",
    "ClusterConfig": "slurmflow.slurm.types",
    "ClusterInfo": "slurmflow.slurm.types",
    "DepClause": "slurmflow.slurm.types",
    "Dependency": "slurmflow.slurm.types",
    "DepKind": "slurmflow.slurm.types",
    "JobInfo": "slurmflow.slurm.types",
    "JobSpec": "slurmflow.slurm.types",
    "JobState": "slurmflow.slurm.types",
    "QueryResult": "slurmflow.slurm.types",
    "FunctionRunner": "slurmflow.slurm.runner",
    "Runner": "slurmflow.slurm.runner",
    "SubprocessRunner": "slurmflow.slurm.runner",
}

if TYPE_CHECKING:
    from slurmflow.backends.base import Backend
    from slurmflow.backends.fake import FakeSlurm
    from slurmflow.backends.local import LocalSlurm
    from slurmflow.backends.slurm_cli import SlurmCLI
    from slurmflow.errors import (
        AccountingUnavailable,
        CommandError,
        CommandNotFound,
        CommandTimeout,
        ControllerFull,
        ControllerUnavailable,
        NotPermitted,
        ParseError,
        PolicyViolation,
        SlurmError,
        SlurmflowError,
        SlurmNotConfigured,
        SubmissionAmbiguous,
        SubmissionRefused,
        UsageError,
    )
    from slurmflow.rundir.metrics import log, should_stop, summary
    from slurmflow.slurm.runner import (
        FunctionRunner,
        Runner,
        SubprocessRunner,
    )
    from slurmflow.slurm.types import (
        ClusterConfig,
        ClusterInfo,
        DepClause,
        Dependency,
        DepKind,
        JobInfo,
        JobSpec,
        JobState,
        QueryResult,
    )


__getattr__ = exports("slurmflow", _EXPORTS, globals())


__all__ = [
    "AccountingUnavailable",
    "Backend",
    "ClusterConfig",
    "ClusterInfo",
    "CommandError",
    "CommandNotFound",
    "CommandTimeout",
    "ControllerFull",
    "ControllerUnavailable",
    "DepClause",
    "DepKind",
    "Dependency",
    "FakeSlurm",
    "FunctionRunner",
    "JobInfo",
    "JobSpec",
    "JobState",
    "LocalSlurm",
    "NotPermitted",
    "ParseError",
    "PolicyViolation",
    "QueryResult",
    "Runner",
    "SlurmCLI",
    "SlurmError",
    "SlurmNotConfigured",
    "SlurmflowError",
    "SubmissionAmbiguous",
    "SubmissionRefused",
    "SubprocessRunner",
    "UsageError",
    "__version__",
    "log",
    "should_stop",
    "summary",
]
