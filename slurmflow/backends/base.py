"""The Backend protocol: what slurmflow needs from a scheduler, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from slurmflow.capabilities import Capabilities
from slurmflow.model import ClusterConfig, Dependency, JobSpec, QueryResult


class Backend(Protocol):
    def submit(self, spec: JobSpec, script_path: str | None = None) -> str:
        """Submit one job or array; return its job id. Raises SubmissionAmbiguous when Slurm may
        have created the job without saying so (reconcile by name before submitting again)."""
        ...

    def query(self, job_ids: Sequence[str] = (), *, name: str | None = None) -> QueryResult:
        """Jobs and array tasks (one row per task) by id or by job name, in one batched call."""
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
