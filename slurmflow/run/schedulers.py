"""Which scheduler a command talks to: at launch, Slurm when this machine (or a --via prefix)
reaches one and the local engine otherwise; afterwards, the one the run recorded."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow.backends.base import Backend
from slurmflow.backends.local import LocalSlurm, detect_gpus
from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import UsageError
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.runner import SubprocessRunner

PREFIX_ENV = "SLURMFLOW_SLURM_PREFIX"
RECORD = "backend.json"
# GPU slots of the local engine on a machine without GPUs: GPU stages run on the CPU.
CPU_GPU_SLOTS = 4


def slurm(prefix: str | None = None) -> SlurmCLI:
    """The Slurm backend. A prefix (or $SLURMFLOW_SLURM_PREFIX) runs every Slurm command through
    another program, e.g. `docker exec -i -u alice slurmflow-mini` or `ssh login1`."""
    words = shlex.split(prefix if prefix is not None else os.environ.get(PREFIX_ENV, ""))
    return SlurmCLI(SubprocessRunner(prefix=tuple(words)))


def kind(choice: str, via: str | None, which: Callable[[str], str | None] = shutil.which) -> str:
    """`auto` is Slurm when a prefix is given or sbatch is on PATH, the local engine otherwise."""
    if choice != "auto":
        return choice
    return "slurm" if via or os.environ.get(PREFIX_ENV) or which("sbatch") else "local"


@dataclass(frozen=True)
class Chosen:
    backend: Backend
    local: LocalSlurm | None  # the local engine when that is the one (a foreground launch drives it)
    note: str | None = None  # what the user should know of the choice

    @property
    def kind(self) -> str:
        return "local" if self.local is not None else "slurm"


def for_launch(choice: str, via: str | None, local_gpus: int | None, gpus: Callable[[], int] = detect_gpus) -> Chosen:
    if kind(choice, via) != "local":
        return Chosen(slurm(via), None)
    note = None
    n = local_gpus
    if n is None:
        n = gpus()
        if n == 0:
            n = CPU_GPU_SLOTS
            note = f"no GPU on this machine: GPU stages run on the CPU with {n} GPU slots"
    local = LocalSlurm(gpus=n)
    return Chosen(local, local, note)


def record(store: RunStore, chosen: Chosen, via: str | None) -> None:
    """What later commands on the run talk to, and what the cluster's commands accept (probed once)."""
    store.write_json(RECORD, {"backend": chosen.kind, "via": via or os.environ.get(PREFIX_ENV)})
    chosen.backend.save_capabilities(store.path("capabilities.json"))


def of_run(store: RunStore, via: str | None = None) -> SlurmCLI:
    """The Slurm backend a run was launched through (its recorded prefix, unless `via` is given)."""
    recorded = store.read_json(RECORD) if store.path(RECORD).exists() else {"backend": "slurm"}
    if recorded["backend"] == "local":
        raise UsageError(f"run {store.run_id} ran on the local backend, whose jobs ended with it: launch it again")
    backend = slurm(via if via is not None else recorded.get("via"))
    backend.capabilities_cache = store.path("capabilities.json")  # probed once, at launch
    return backend
