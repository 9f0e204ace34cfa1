"""slurmflow's domain types: stages and their resources, trials, and the plan (job nodes and edges).

Slurm's own types (job states, dependencies, job specs, job info) live in `slurmflow.slurm.types`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from slurmflow.slurm.types import DepKind
from slurmflow.slurm.units import time_hours


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
    app: str | None = None  # or a Hydra app (a script path, or a module), run with `app_overrides`
    app_overrides: tuple[str, ...] = ()
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
    # A JSON file of final metrics the stage's command writes itself (relative to the trial
    # directory), folded into the trial's metrics when the task ends; metrics.json when unset.
    metrics_file: str | None = None


@dataclass(frozen=True)
class Objective:
    """What a sweep optimises: a metric a stage reports (`test_accuracy`, or `eval.test_accuracy`
    where two stages report the same name) and whether more is better."""

    metric: str
    mode: str = "max"  # "max" or "min"

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0


@dataclass(frozen=True)
class MlflowTracking:
    """`tracking: {mlflow: ...}`: log the campaign to MLflow as its tasks finish (the monitor)."""

    uri: str | None = None  # None: an SQLite store beside the runs directory
    experiment: str | None = None  # None: the slurmflow experiment's name


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: its position, a stable id and the overrides that make it."""

    index: int
    id: str
    overrides: tuple[str, ...]
    # A search trial's typed values ((key, value), ...), set on experiment.yaml in the job without
    # Hydra; None: the values are the sweep's (launch.json) or the trial is composed.
    values: tuple[tuple[str, object], ...] | None = None


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

    def log_file(self, task: int | None = None) -> str:
        """Where the node's log goes, relative to the run's `logs/`: one file per array task (Slurm
        expands `%a` to the task index), one for a plain job. The one place the layout is decided."""
        if not self.array:
            return f"{self.key}/job.out"
        return f"{self.key}/{'%a' if task is None else task}.out"


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


@dataclass(frozen=True)
class SearchParam:
    """One dimension of a `search:` space, as Hydra's Optuna-sweeper grammar wrote it:
    `interval(a, b)` (float), `int(interval(a, b))`, `tag(log, ...)`, `range(a, b[, step])`,
    `choice(...)` or a comma list (categorical). Values are JSON scalars."""

    name: str  # the config key, e.g. model.lr
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None  # inclusive, as Optuna's distributions take it
    log: bool = False
    step: float | None = None
    choices: tuple[str | int | float | bool | None, ...] = ()
    group: bool = False  # a config-group choice: the trial's config is composed by Hydra


@dataclass(frozen=True)
class Search:
    """`search:`: an Optuna study run as Slurm arrays, advanced by the monitor (no driver process).

    The objective(s) are the experiment's `objective:`; `batch` trials are kept in flight."""

    params: tuple[SearchParam, ...]
    n_trials: int
    batch: int
    sampler: str = "tpe"  # tpe | cmaes | random | grid | qmc
    sampler_options: Mapping[str, object] = field(default_factory=dict)
    pruner: str | None = None  # None | median | successive_halving | hyperband | percentile | nop
    pruner_options: Mapping[str, object] = field(default_factory=dict)
    seed: int | None = None
    storage: str | None = None  # None: SQLite in the run directory; "journal": a journal file there; else a URL
    study_name: str | None = None  # None: the run id
    max_gpu_hours: float | None = None
    deadline_s: float | None = None  # seconds after launch after which no new trial is asked for
    prune_stage: str | None = None  # the stage whose curve of the objective's metric the pruner reads
    grace_s: float = 0.0  # a pruned task is cancelled this long after should_stop() turned true
