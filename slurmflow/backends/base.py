"""The Backend protocol: what slurmflow needs from a scheduler, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from slurmflow.slurm.capabilities import Capabilities
from slurmflow.slurm.types import Attempt, ClusterConfig, ClusterInfo, Dependency, JobSpec, QueryResult

if TYPE_CHECKING:
    from slurmflow.slurm.accounting import Usage


class Accounting(Protocol):
    """Slurm's accounting as a launch consults it: who is asking, and what their associations
    have used and may still use (the GPU-hour budget and submit-limit checks)."""

    def whoami(self) -> str: ...

    def usage(self) -> list[Usage]:
        """Every association's limits and current use; raises SlurmflowError without accounting."""
        ...

    def qos_submit_limits(self) -> dict[str, tuple[int | None, int | None]]:
        """QOS name -> (MaxSubmitJobsPerUser, GrpSubmitJobs)."""
        ...


class Backend(Protocol):
    @property
    def runs_submitit(self) -> bool:
        """Whether submitit may submit callable stages: it runs sbatch itself, so only where Slurm's
        commands run on this machine (no command prefix). Otherwise callables go through the script."""
        ...

    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        """Submit one job or array; return its job id. Raises SubmissionAmbiguous when Slurm may
        have created the job without saying so (reconcile by name before submitting again)."""
        ...

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        """Jobs and array tasks (one row per task) by id or by job name, in one batched call."""
        ...

    def history(self, job_ids: Sequence[str]) -> tuple[Attempt, ...]:
        """Every attempt of these jobs' tasks (array ids expand to their tasks), in one batched
        call: Slurm's accounting (`sacct --duplicates`), or the local engine's own records. Oldest
        attempt of each task first. Raises AccountingUnavailable where accounting cannot answer."""
        ...

    def cancel(self, job_ids: Sequence[str]) -> None: ...

    def requeue(self, job_ids: Sequence[str], *, start_now: bool = False, hold: bool = False) -> None:
        """Put finished or running jobs back in the queue with the same id (restart count + 1).
        Slurm holds a requeued job ~120 s (reason BeginTime); start_now lifts that. With hold the
        job stays held until `release`: time to fix its dependency before Slurm re-judges it."""
        ...

    def release(self, job_ids: Sequence[str]) -> None: ...

    def update_begin_now(self, job_id: str) -> None:
        """Let a pending job start now (lift a BeginTime hold, e.g. the one after a requeue)."""
        ...

    def update_dependency(self, job_id: str, dependency: Dependency | None) -> None:
        """Replace a pending job's dependency (None clears it). This is how a child left with
        DependencyNeverSatisfied is revived once its requeued parent can succeed."""
        ...

    def exclude_nodes(self, job_id: str, nodes: Sequence[str]) -> None:
        """Keep a pending job off these nodes (after it failed on one of them)."""
        ...

    def config(self) -> ClusterConfig: ...

    def capabilities(self) -> Capabilities:
        """What the scheduler's commands accept and how it behaves where no command says (capabilities.py)."""
        ...

    def save_capabilities(self, path: Path) -> None:
        """Record the capabilities beside a run, so later commands on it never probe again."""
        ...

    def cluster_info(self) -> ClusterInfo:
        """What planning needs: partitions, GPUs per partition, array limits, the user's accounts."""
        ...

    def accounting(self) -> Accounting | None:
        """The associations to check a campaign against; None where the scheduler keeps none."""
        ...
