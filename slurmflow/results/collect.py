"""A run's outcome, one row per trial: what `results`, `report`, `runs` and `track` read.

One pass over the run directory (manifest, event log, each trial's metrics and GPU samples) and
one batched history query to the scheduler (every attempt of every task: Slurm's accounting, or
the local engine's records). Where the scheduler cannot answer (accounting down, the run's
cluster out of reach), the tasks' own status files stand in: times and nodes as the wrapper saw
them, without the time spent pending.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.errors import SlurmflowError, UsageError
from slurmflow.model import Objective, Plan
from slurmflow.rundir import metrics
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import Attempt, JobState

if TYPE_CHECKING:
    from slurmflow.backends.base import Backend
    from slurmflow.gpu.usage import RunGpu

NOT_SUBMITTED = "NOT_SUBMITTED"


@dataclass(frozen=True)
class TaskResult:
    """One task: a stage of one trial, or a single job."""

    stage: str
    node: str
    trial: int | None
    job_id: str  # the Slurm id holding it now ("123_4"); "-" when never submitted
    state: str  # a Slurm state name (COMPLETED, FAILED, ...), or NOT_SUBMITTED
    attempts: tuple[Attempt, ...] = ()
    gpus: int = 0
    gpu_hours_used: float | None = None  # from the task's NVML samples; None: not sampled
    exit_code: int | None = None

    @property
    def retries(self) -> int:
        """Runs after the first. An attempt that never started is none: on 22.05 a dependent that
        Slurm cancelled while it pended, and the monitor then revived, keeps a record of its own."""
        return max(0, sum(1 for a in self.attempts if a.start is not None) - 1)

    def elapsed_s(self, now: float) -> float:
        """Time spent running, over every attempt."""
        return sum((a.end or now) - a.start for a in self.attempts if a.start is not None)

    def gpu_hours_allocated(self, now: float) -> float:
        return (
            sum(((a.end or now) - a.start) * (a.gpus or self.gpus) for a in self.attempts if a.start is not None) / 3600
        )


@dataclass(frozen=True)
class TrialResult:
    index: int
    trial_id: str
    overrides: tuple[str, ...]
    state: str
    metrics: Mapping[str, float]  # by column name: bare where one stage reports it, else stage.name
    tasks: tuple[TaskResult, ...]
    objective: tuple[float | None, ...] = ()
    rank: int | None = None  # 1 = best; None: not ranked (not completed, or no objective value)
    curves: Mapping[str, Mapping[int, float]] = field(default_factory=dict, repr=False)
    now: float = 0.0

    @property
    def name(self) -> str:
        return str(self.index)

    @property
    def params(self) -> dict[str, str]:
        return params(self.overrides)

    @property
    def retries(self) -> int:
        return sum(t.retries for t in self.tasks)

    @property
    def elapsed_s(self) -> float:
        return sum(t.elapsed_s(self.now) for t in self.tasks)

    @property
    def gpu_hours_allocated(self) -> float:
        return sum(t.gpu_hours_allocated(self.now) for t in self.tasks)

    @property
    def gpu_hours_used(self) -> float | None:
        used = [t.gpu_hours_used for t in self.tasks if t.gpu_hours_used is not None]
        return sum(used) if used else None

    @property
    def gpu_efficiency(self) -> float | None:
        used, alloc = self.gpu_hours_used, self.gpu_hours_allocated
        return used / alloc if used is not None and alloc else None


@dataclass(frozen=True)
class RunResults:
    run_id: str
    experiment: str
    root: Path
    objectives: tuple[Objective, ...]
    trials: tuple[TrialResult, ...]  # ranked ones best first, then the rest by trial number
    singles: tuple[TaskResult, ...]  # tasks of stages that run once (prep, report, on_failure)
    plan: Plan
    source: str  # where the times came from: "accounting", "local engine", "task status files"
    now: float
    provenance: Mapping[str, Any] = field(default_factory=dict)
    gpu: RunGpu | None = None
    base_overrides: tuple[str, ...] = ()  # the launch's own (not swept) overrides, shared by every trial

    @property
    def best(self) -> TrialResult | None:
        return self.trials[0] if self.trials and self.trials[0].rank == 1 else None

    @property
    def tasks(self) -> list[TaskResult]:
        return [t for tr in sorted(self.trials, key=lambda r: r.index) for t in tr.tasks] + list(self.singles)

    @property
    def metric_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.trials:
            seen.update(dict.fromkeys(t.metrics))
        return list(seen)


# --- the pure part ------------------------------------------------------------------------------


def params(overrides: Iterable[str]) -> dict[str, str]:
    """key -> value of Hydra overrides (`+key=v` and `++key=v` by their key; deletions left out)."""
    out = {}
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and not key.startswith("~"):
            out[key.lstrip("+")] = value
    return out


def column_names(per_trial: Iterable[Mapping[str, metrics.StageMetrics]]) -> dict[tuple[str, str], str]:
    """(stage, metric) -> its column: the bare name where one stage reports it, else stage.name."""
    stages_of: dict[str, set[str]] = {}
    for reported in per_trial:
        for stage, m in reported.items():
            for name in m.values():
                stages_of.setdefault(name, set()).add(stage)
    return {
        (stage, name): name if len(stages) == 1 else f"{stage}.{name}"
        for name, stages in stages_of.items()
        for stage in stages
    }


def resolve(obj: Objective, columns: Mapping[tuple[str, str], str], stages: Iterable[str]) -> str | None:
    """The column an objective names; None when no trial reports it (yet). A bare name two stages
    report is a UsageError naming the qualified spellings."""
    names = set(columns.values())
    if obj.metric in names:
        return obj.metric
    stage, _, rest = obj.metric.partition(".")
    if stage in set(stages) and (stage, rest) in columns:
        return columns[(stage, rest)]
    clashing = sorted(c for (s, n), c in columns.items() if n == obj.metric)
    if clashing:
        raise UsageError(f"objective {obj.metric}: reported by more than one stage; write one of {', '.join(clashing)}")
    return None


def trial_state(tasks: Sequence[TaskResult]) -> str:
    """COMPLETED when every task completed; else the state of the first task that ended without
    success (in stage order); else RUNNING, PENDING or NOT_SUBMITTED."""
    for t in tasks:
        known = JobState.__members__.get(t.state)
        if known is not None and known.final and known is not JobState.COMPLETED:
            return t.state
    states = {t.state for t in tasks}
    if states == {"COMPLETED"}:
        return "COMPLETED"
    for s in ("RUNNING", "COMPLETING", "PENDING", "REQUEUED"):
        if s in states:
            return "RUNNING" if s == "COMPLETING" else s
    return NOT_SUBMITTED if NOT_SUBMITTED in states else sorted(states)[0] if states else NOT_SUBMITTED


def rank(trials: list[TrialResult], objectives: Sequence[Objective], cols: Sequence[str | None]) -> list[TrialResult]:
    """Completed trials with a value for every objective, best first (objectives in order, the
    next one breaking ties), then every other trial by number."""
    scored: list[TrialResult] = []
    rest: list[TrialResult] = []
    for t in trials:
        values = tuple(t.metrics.get(c) if c else None for c in cols)
        t = replace(t, objective=values)
        ok = objectives and t.state == "COMPLETED" and all(v is not None and not math.isnan(v) for v in values)
        (scored if ok else rest).append(t)
    scored.sort(
        key=lambda t: (*tuple(-o.sign * (v or 0.0) for o, v in zip(objectives, t.objective, strict=True)), t.index)
    )
    return [replace(t, rank=i + 1) for i, t in enumerate(scored)] + sorted(rest, key=lambda t: t.index)


def pareto(trials: Sequence[TrialResult], objectives: Sequence[Objective]) -> set[int]:
    """Trial indices no other ranked trial beats on every objective (several objectives)."""
    ranked = [t for t in trials if t.rank is not None]
    signed = {t.index: [o.sign * (v or 0.0) for o, v in zip(objectives, t.objective, strict=True)] for t in ranked}
    front = set()
    for t in ranked:
        a = signed[t.index]
        if not any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for b in signed.values()):
            front.add(t.index)
    return front


# --- reading a run --------------------------------------------------------------------------------


def _status_attempt(path: str, job_id: str) -> tuple[Attempt | None, int | None]:
    """A task's status file (job/task.py) as an attempt, where the scheduler cannot say."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None, None
    names = {
        "completed": JobState.COMPLETED,
        "failed": JobState.FAILED,
        "cancelled": JobState.CANCELLED,
        "requeued": JobState.REQUEUED,
        "running": JobState.RUNNING,
    }
    state = names.get(str(doc.get("state")), JobState.UNKNOWN)
    return Attempt(job_id, state, None, doc.get("started"), doc.get("ended"), doc.get("host")), doc.get("exit_code")


def history(
    store: RunStore, state: RunState, plan: Plan, backend: Backend | None
) -> tuple[dict[str, list[Attempt]], str]:
    """Slurm task id -> its attempts, oldest first, and where they came from."""
    if backend is None:
        return {}, "task status files"
    monitor = set(state.monitor_jobs)
    jobs = [j for j in state.jobs(plan) if j not in monitor]
    try:
        found = backend.history(jobs) if jobs else ()
    except SlurmflowError:
        return {}, "task status files"
    out: dict[str, list[Attempt]] = {}
    for a in found:
        out.setdefault(a.job_id, []).append(a)
    from slurmflow.backends.local_run import LocalRun

    return out, "local engine" if isinstance(backend, LocalRun) else "accounting"


def load_objectives(launch: Mapping[str, Any]) -> tuple[Objective, ...]:
    """The experiment's objectives, as launch.json keeps them."""
    return tuple(Objective(o["metric"], o.get("mode", "max")) for o in launch.get("objective") or ())


def collect(
    store: RunStore,
    backend: Backend | None,
    *,
    objectives: Sequence[Objective] | None = None,
    gpu: bool = True,
    clock: Callable[[], float] = time.time,
) -> RunResults:
    """The run's results. `objectives` replaces the experiment's own (`results --objective`)."""
    now = clock()
    plan = store.plan()
    state = store.state()
    launch = store.read_json("launch.json")
    objs = tuple(objectives) if objectives is not None else load_objectives(launch)
    attempts, source = history(store, state, plan, backend)
    usage = _gpu(store) if gpu and any(s.resources.gpus for s in plan.stages.values()) else None
    sampled = [t for t in usage.tasks if t.summary and t.summary.samples] if usage else []
    used = {(t.node, t.trial): t.summary.gpu_hours_used for t in sampled if t.summary}

    def task(node_key: str, stage: str, index: int | None, trial: int | None, status: str) -> TaskResult:
        holders = state.holders(node_key, index)
        if not holders:
            return TaskResult(stage, node_key, trial, "-", NOT_SUBMITTED)
        seen = [a for h in holders for a in attempts.get(h, ())]
        exit_code = None
        if not seen:
            a, exit_code = _status_attempt(status, holders[-1])
            seen = [a] if a else []
        last = seen[-1] if seen else None
        st = last.state.name if last else "PENDING"
        if last and exit_code is None:
            exit_code = last.exit_code
        gpus = plan.stages[stage].resources.gpus
        return TaskResult(
            stage, node_key, trial, holders[-1], st, tuple(seen), gpus, used.get((node_key, trial)), exit_code
        )

    trials_of: dict[int, list[TaskResult]] = {}
    singles: list[TaskResult] = []
    manifest = {t.index: t for t in store.trials()}
    dirs = {i: str(store.trial_dir(t)) for i, t in manifest.items()}  # strings: 10,000s of paths
    for node in plan.nodes:
        stage = plan.stages[node.stage]
        if node.array:
            name = f"{stage.name}.status.json"
            for i in range(node.size):
                t = node.offset + i
                trials_of.setdefault(t, []).append(task(node.key, stage.name, i, t, os.path.join(dirs[t], name)))
        else:
            status = str(store.path("stages", stage.name, f"{stage.name}.status.json"))
            singles.append(task(node.key, stage.name, None, None, status))

    reported = {i: metrics.read(dirs[i]) for i in manifest}
    cols = column_names(reported.values())
    rows = []
    for i, trial in manifest.items():
        per_stage = reported[i]
        values = {cols[(s, n)]: v for s, m in per_stage.items() for n, v in m.values().items()}
        curves = {cols[(s, n)]: pts for s, m in per_stage.items() for n, pts in m.curves.items() if pts}
        tasks = tuple(trials_of.get(i, ()))
        rows.append(
            TrialResult(i, trial.id, trial.overrides, trial_state(tasks), values, tasks, curves=curves, now=now)
        )
    ranked = rank(rows, objs, [resolve(o, cols, plan.stages) for o in objs])
    prov = store.read_json("provenance.json") if store.path("provenance.json").exists() else {}
    return RunResults(
        store.run_id,
        str(launch.get("experiment") or plan.experiment),
        store.root,
        objs,
        tuple(ranked),
        tuple(singles),
        plan,
        source,
        now,
        prov,
        usage,
        tuple(launch.get("base_overrides") or ()),
    )


def _gpu(store: RunStore) -> RunGpu | None:
    from slurmflow.gpu import usage

    try:
        return usage.collect(store)
    except (OSError, ValueError):
        return None


def run_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
