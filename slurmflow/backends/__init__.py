"""Schedulers slurmflow can drive: the Slurm command line and an in-memory fake."""

from slurmflow.backends.base import Backend
from slurmflow.backends.fake import FakeNode, FakeSlurm, Outcome
from slurmflow.backends.slurm_cli import SlurmCLI

__all__ = ["Backend", "FakeNode", "FakeSlurm", "Outcome", "SlurmCLI"]
