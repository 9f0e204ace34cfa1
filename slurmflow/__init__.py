"""slurmflow: Hydra experiments to Slurm job-array dependency graphs, submitted at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slurmflow._version import __version__

# The public API, imported on first use: a task on a compute node imports `slurmflow.task`, which
# must not pay for the backends, the Slurm parsers and the fake scheduler on every start.
_EXPORTS = {
    "Backend": "slurmflow.backends.base",
    "FakeSlurm": "slurmflow.backends.fake",
    "SlurmCLI": "slurmflow.backends.slurm_cli",
    "CommandError": "slurmflow.errors",
    "CommandTimeout": "slurmflow.errors",
    "ControllerUnavailable": "slurmflow.errors",
    "SlurmError": "slurmflow.errors",
    "SlurmflowError": "slurmflow.errors",
    "SubmissionAmbiguous": "slurmflow.errors",
    "UsageError": "slurmflow.errors",
    "ClusterConfig": "slurmflow.model",
    "DepClause": "slurmflow.model",
    "Dependency": "slurmflow.model",
    "DepKind": "slurmflow.model",
    "JobInfo": "slurmflow.model",
    "JobSpec": "slurmflow.model",
    "JobState": "slurmflow.model",
    "QueryResult": "slurmflow.model",
    "FunctionRunner": "slurmflow.runner",
    "Runner": "slurmflow.runner",
    "SubprocessRunner": "slurmflow.runner",
}

if TYPE_CHECKING:
    from slurmflow.backends import Backend, FakeSlurm, SlurmCLI
    from slurmflow.errors import (
        CommandError,
        CommandTimeout,
        ControllerUnavailable,
        SlurmError,
        SlurmflowError,
        SubmissionAmbiguous,
        UsageError,
    )
    from slurmflow.model import (
        ClusterConfig,
        DepClause,
        Dependency,
        DepKind,
        JobInfo,
        JobSpec,
        JobState,
        QueryResult,
    )
    from slurmflow.runner import FunctionRunner, Runner, SubprocessRunner


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slurmflow' has no attribute {name!r}")


__all__ = [
    "Backend",
    "ClusterConfig",
    "CommandError",
    "CommandTimeout",
    "ControllerUnavailable",
    "DepClause",
    "DepKind",
    "Dependency",
    "FakeSlurm",
    "FunctionRunner",
    "JobInfo",
    "JobSpec",
    "JobState",
    "QueryResult",
    "Runner",
    "SlurmCLI",
    "SlurmError",
    "SlurmflowError",
    "SubmissionAmbiguous",
    "SubprocessRunner",
    "UsageError",
    "__version__",
]
