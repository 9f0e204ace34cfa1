"""Frozen domain types shared between modules: job states, dependencies, job specs and job info."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from slurmflow.units import time_hours


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
class Resources:
    """What one task of a stage asks Slurm for. `time` is already in Slurm's format."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 0
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None
    constraint: str | None = None
    extra: tuple[str, ...] = ()

    def hours(self) -> float | None:
        """The time limit in hours; None when the stage sets none or sets no limit (UNLIMITED)."""
        return time_hours(self.time)


@dataclass(frozen=True)
class StageDep:
    kind: DepKind
    stage: str


@dataclass(frozen=True)
class RetryPolicy:
    """What the monitor may retry, per stage. Defaults a careful user would pick: infrastructure
    failures are retried, a program's own failures are not unless their exit codes are listed."""

    infra: int = 2  # NODE_FAIL, BOOT_FAIL, PREEMPTED: requeues per task
    exclude_failed_node: bool = True
    exit_codes: tuple[int, ...] = ()  # FAILED with one of these exit codes is retried ...
    exit_retries: int = 2  # ... this many times per task
    timeouts: int = 0  # TIMEOUT: requeues per task (useful only for stages that checkpoint)
    oom_mem_factor: float | None = None  # OUT_OF_MEMORY: resubmit with mem x factor ...
    oom_mem_cap: str | None = None  # ... up to this much (e.g. 64G)
    oom_retries: int = 2


@dataclass(frozen=True)
class Checkpoint:
    """A stage that can checkpoint: Slurm sends `signal` `seconds` before the time limit
    (--signal=B:<signal>@<seconds>); the task forwards it, gives the command `grace` seconds to
    save, and requeues itself while its restart count is under `max_restarts`."""

    signal: str = "USR1"
    seconds: int = 120
    grace: int = 60
    max_restarts: int = 3


@dataclass(frozen=True)
class GpuSampling:
    """The in-job GPU sampler of a stage with GPUs: one NVML reading of each allocated GPU every
    `interval` seconds, appended to the trial directory and flushed every `flush` seconds.
    `source` is `nvml`, or `fake:<pattern>` (a scripted GPU, for tests and demos)."""

    enabled: bool = True
    interval: float = 1.0
    flush: float = 10.0
    source: str = "nvml"


@dataclass(frozen=True)
class IdleRule:
    """Flag (or cancel) a task whose GPUs stay below `below` percent for `for_s` seconds.
    `gpus: all` looks at the task's busiest GPU (the task is doing nothing on the GPU);
    `any` at its idlest (one allocated GPU is wasted)."""

    below: float = 5.0
    for_s: float = 1800.0
    action: str = "warn"  # warn | cancel
    gpus: str = "all"  # all | any


@dataclass(frozen=True)
class Stage:
    """One step of an experiment: a command or a Python callable, once or once per trial."""

    name: str
    command: str | None = None  # a bash command line; every ${...} value is inserted as one quoted word
    argv: tuple[str, ...] | None = None  # or an argument list run without a shell, one ${...} per word
    callable: str | None = None  # "package.module:function", submitted through submitit
    per_trial: bool = False
    deps: tuple[StageDep, ...] = ()
    singleton: bool = False
    resources: Resources = Resources()
    max_parallel: int | None = None  # campaign-wide cap on running tasks of this stage
    requeue: bool | None = None
    retry: RetryPolicy = RetryPolicy()
    checkpoint: Checkpoint | None = None
    gpu: GpuSampling = GpuSampling()
    gpu_idle: IdleRule | None = None


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: its position, a stable id and the overrides that make it."""

    index: int
    id: str
    overrides: tuple[str, ...]


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


@dataclass(frozen=True)
class Edge:
    kind: DepKind
    parent: str  # a node key


@dataclass(frozen=True)
class JobNode:
    """One sbatch submission of the plan: a single job or one chunk of a stage's array.

    Task i of the chunk runs trial `offset + i`. Keys, never job ids: ids exist only at submission.
    """

    key: str
    stage: str
    edges: tuple[Edge, ...] = ()
    size: int = 1
    offset: int = 0
    array: bool = False
    throttle: int | None = None
    singleton: bool = False
    # Join edges with '?' (any) instead of ',' (all): a failure handler of a chunked stage must
    # fire when ANY chunk fails, and `afternotok:a:b` waits for ALL of a and b to fail.
    any_of: bool = False

    def array_expr(self) -> str | None:
        if not self.array:
            return None
        expr = f"0-{self.size - 1}" if self.size > 1 else "0"
        return expr + (f"%{self.throttle}" if self.throttle else "")


@dataclass(frozen=True)
class Plan:
    """The campaign as a DAG of submissions, in topological order (parents before children)."""

    experiment: str
    stages: Mapping[str, Stage]
    nodes: tuple[JobNode, ...]
    n_trials: int
    gpu_hours: float
    gpu_hours_unbounded: tuple[str, ...] = ()  # stages with GPUs but no time limit

    def node(self, key: str) -> JobNode:
        for n in self.nodes:
            if n.key == key:
                return n
        raise KeyError(key)

    def tasks(self) -> int:
        return sum(n.size for n in self.nodes)

    def stage_tasks(self, stage: str) -> int:
        """Tasks of one stage over all its chunks (a single job counts 1)."""
        return sum(n.size for n in self.nodes if n.stage == stage)
