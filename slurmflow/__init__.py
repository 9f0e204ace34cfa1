"""slurmflow: Hydra experiments to Slurm job-array dependency graphs, submitted at once."""

from slurmflow._version import __version__
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
