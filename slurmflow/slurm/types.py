"""Slurm's own vocabulary as frozen values: job states, dependency kinds and clauses, one sbatch
submission (JobSpec), what squeue/sacct say of a job (JobInfo), and the cluster facts read before
planning (ClusterConfig, ClusterInfo)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class JobState(enum.Enum):
    """A Slurm job state, with its place in a job's life and whether it is final.

    The order lets a merge of two views (controller and accounting) keep the newer one, and a
    final state is never overwritten by a late non-final report (except by an explicit requeue,
    which Slurm reports as PENDING again with a higher restart count).
    """

    PENDING = ("PD", 0, False)
    REQUEUE_HOLD = ("RH", 0, False)
    REQUEUE_FED = ("RF", 0, False)
    REQUEUED = ("RQ", 0, False)
    CONFIGURING = ("CF", 1, False)
    RUNNING = ("R", 2, False)
    SUSPENDED = ("S", 2, False)
    STOPPED = ("ST", 2, False)
    RESIZING = ("RS", 2, False)
    SIGNALING = ("SI", 2, False)
    STAGE_OUT = ("SO", 3, False)
    COMPLETING = ("CG", 3, False)
    COMPLETED = ("CD", 4, True)
    FAILED = ("F", 4, True)
    CANCELLED = ("CA", 4, True)
    TIMEOUT = ("TO", 4, True)
    NODE_FAIL = ("NF", 4, True)
    PREEMPTED = ("PR", 4, True)
    BOOT_FAIL = ("BF", 4, True)
    DEADLINE = ("DL", 4, True)
    OUT_OF_MEMORY = ("OOM", 4, True)
    REVOKED = ("RV", 4, True)
    SPECIAL_EXIT = ("SE", 4, True)
    UNKNOWN = ("?", -1, False)

    def __init__(self, compact: str, rank: int, final: bool) -> None:
        self.compact = compact
        self.rank = rank
        self.final = final

    @property
    def succeeded(self) -> bool:
        return self is JobState.COMPLETED

    @property
    def started(self) -> bool:
        """Whether a job in this state has (or had) its batch script running."""
        return self.rank >= 2 and self is not JobState.CANCELLED


class DepKind(enum.Enum):
    """Slurm dependency types (man sbatch, --dependency). `after` (start) is left out on purpose:
    it fires when the parent STARTS, which is never what "run after" means in a campaign."""

    AFTER_OK = "afterok"
    AFTER_NOT_OK = "afternotok"
    AFTER_ANY = "afterany"
    AFTER_CORR = "aftercorr"
    SINGLETON = "singleton"


@dataclass(frozen=True)
class DepClause:
    kind: DepKind
    job_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is DepKind.SINGLETON and self.job_ids:
            raise ValueError("singleton takes no job ids")
        if self.kind is not DepKind.SINGLETON and not self.job_ids:
            raise ValueError(f"{self.kind.value} needs at least one job id")


@dataclass(frozen=True)
class Dependency:
    """Clauses joined by `,` (all must hold) or, with any_of, by `?` (one suffices).
    Slurm allows one kind of separator per job."""

    clauses: tuple[DepClause, ...]
    any_of: bool = False

    @classmethod
    def on(cls, kind: DepKind, *job_ids: str) -> Dependency:
        return cls((DepClause(kind, tuple(job_ids)),))

    def parents(self) -> tuple[str, ...]:
        return tuple(j for c in self.clauses for j in c.job_ids)


@dataclass(frozen=True)
class JobSpec:
    """One sbatch submission: a single job or an array. Pure data; `sbatch.argv()` renders it."""

    name: str
    script: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    array: str | None = None
    dependency: Dependency | None = None
    # Without it a job whose dependency can never be met pends forever (DependencyNeverSatisfied).
    kill_on_invalid_dep: bool = True
    requeue: bool | None = None
    comment: str | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    constraint: str | None = None
    exclude: tuple[str, ...] = ()
    signal: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says of one job or one array task."""

    job_id: str  # "123" for a plain job, "123_4" for an array task
    name: str
    state: JobState
    array_job_id: str | None = None
    array_task_id: int | None = None
    raw_id: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    nodes: str | None = None
    account: str | None = None
    user: str | None = None
    partition: str | None = None
    restarts: int | None = None
    cancelled_by: str | None = None

    @property
    def base_id(self) -> str:
        return self.array_job_id or self.job_id


@dataclass(frozen=True)
class Attempt:
    """One run of a job or array task as accounting keeps it (`sacct --duplicates`): a task that
    was requeued has one attempt per start, oldest first, each but the last in state REQUEUED (or
    whatever ended it: NODE_FAIL, PREEMPTED, TIMEOUT before a requeue). Times are epoch seconds."""

    job_id: str  # "123_4" for an array task, "123" for a plain job
    state: JobState
    submit: float | None  # when this attempt was queued (a requeued attempt: when it was requeued)
    start: float | None  # None: never started (cancelled while pending, a dependency that never held)
    end: float | None  # None: still pending or running (one cancelled while pending has an end, no start)
    node: str | None = None
    gpus: int = 0  # GPUs allocated to it (AllocTRES gres/gpu)
    restart: int = 0  # 0 for the first attempt, 1 after one requeue, ...
    exit_code: int | None = None
    signal: int | None = None

    @property
    def base_id(self) -> str:
        return self.job_id.split("_", 1)[0]


@dataclass(frozen=True)
class ClusterConfig:
    """The controller settings planning depends on (`scontrol show config`)."""

    version: str
    max_array_size: int
    max_job_count: int
    min_job_age_s: int
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    """Jobs as Slurm knows them, and whether accounting (slurmdbd) answered."""

    jobs: tuple[JobInfo, ...]
    accounting_available: bool = True

    def by_id(self) -> dict[str, JobInfo]:
        return {j.job_id: j for j in self.jobs}


# --- experiments and plans ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """What planning needs to know of the cluster, read once before planning."""

    max_array_size: int = 1001
    min_job_age_s: int = 300
    partition_gpus: Mapping[str, int] = field(default_factory=dict)  # partition -> most GPUs on one node
    default_partition: str | None = None
    accounts: frozenset[str] | None = None  # the user's accounts; None when unknown
    user: str | None = None  # who submits (the user at the end of a command prefix); None when unknown
    version: str = "unknown"
    # Job records the controller holds at most (every array task counts); None when unknown.
    max_job_count: int | None = None
    # A one-machine cluster (the local engine): its CPUs and memory; None for a Slurm cluster.
    cpus: int | None = None
    mem_mb: int | None = None
