"""Schedulers slurmflow drives, behind one protocol (base.Backend): Slurm's command line
(slurm_cli), the local engine (local: processes on this machine; local_run: a run's queue on disk
and its supervisor), both local engine and test fake (fake) on Slurm's scheduling rules (sim).

Imported on first use, so that a command reading a run does not load the engines it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slurmflow._lazy import exports

_EXPORTS = {
    "Backend": "slurmflow.backends.base",
    "FakeNode": "slurmflow.backends.fake",
    "FakeSlurm": "slurmflow.backends.fake",
    "Outcome": "slurmflow.backends.fake",
    "SlurmCLI": "slurmflow.backends.slurm_cli",
}

if TYPE_CHECKING:
    from slurmflow.backends.base import Backend
    from slurmflow.backends.fake import FakeNode, FakeSlurm, Outcome
    from slurmflow.backends.slurm_cli import SlurmCLI


__getattr__ = exports("slurmflow.backends", _EXPORTS, globals())


__all__ = ["Backend", "FakeNode", "FakeSlurm", "Outcome", "SlurmCLI"]
