"""Which scheduler a command talks to: at launch, Slurm when this machine (or a --via prefix)
reaches one and the local engine otherwise; afterwards, the one the run recorded."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from slurmflow.backends.base import Backend
from slurmflow.backends.local import LocalSlurm, visible_gpus
from slurmflow.backends.local_run import STATE, LocalRun, Settings
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
    local: LocalSlurm | None  # the local engine a launch plans against; the run's own is set up from it
    note: str | None = None  # what the user should know of the choice

    @property
    def kind(self) -> str:
        return "local" if self.local is not None else "slurm"


def for_launch(
    choice: str, via: str | None, local_gpus: int | None, gpus: Callable[[], tuple[str, ...]] = visible_gpus
) -> Chosen:
    """The backend a launch plans against. The local engine gets the GPUs CUDA may use here
    (CUDA_VISIBLE_DEVICES honoured), `--local-gpus` of them when given."""
    if kind(choice, via) != "local":
        return Chosen(slurm(via), None)
    note = None
    devices = gpus()
    if local_gpus is not None:
        devices = devices[:local_gpus] if len(devices) >= local_gpus else tuple(str(i) for i in range(local_gpus))
    elif not devices:
        devices = tuple(str(i) for i in range(CPU_GPU_SLOTS))
        note = f"no GPU on this machine: GPU stages run on the CPU with {CPU_GPU_SLOTS} GPU slots"
    local = LocalSlurm(devices=devices)
    return Chosen(local, local, note)


def local_run(store: RunStore, engine: LocalSlurm) -> LocalRun:
    """The run's own local engine (its queue in the run directory, its supervisor), set up as planned."""
    settings = Settings(devices=engine.devices, cpus=engine.cpus, mem_mb=engine.mem_mb, kill_wait=engine.kill_wait)
    return LocalRun.create(store.local_dir, settings)


def record(store: RunStore, chosen: Chosen, via: str | None) -> None:
    """What later commands on the run talk to, and what the cluster's commands accept (probed once)."""
    store.write_json(RECORD, {"backend": chosen.kind, "via": via or os.environ.get(PREFIX_ENV)})
    chosen.backend.save_capabilities(store.capabilities_path)


def of_run(store: RunStore, via: str | None = None) -> Backend:
    """The backend a run was launched through: its local engine, or Slurm through its recorded
    prefix (unless `via` is given)."""
    recorded = store.read_json(RECORD) if store.path(RECORD).exists() else {"backend": "slurm"}
    if recorded["backend"] == "local":
        if not (store.local_dir / STATE).exists():
            raise UsageError(f"run {store.run_id} ran on the local backend in its launch's process: launch it again")
        return local_of(store)
    backend = slurm(via if via is not None else recorded.get("via"))
    backend.capabilities_cache = store.capabilities_path  # probed once, at launch
    return backend


def local_of(store: RunStore) -> LocalRun:
    """The local engine of a local run (what a foreground launch follows)."""
    return LocalRun(store.local_dir)
