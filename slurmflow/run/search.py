"""A `search:` run kept moving without a driver process: each call of `advance` (at launch, then in
every monitor tick: the foreground loop, `--once` from cron, the `--as-job` chain, or the local
engine's supervisor) tells the study what ended, prunes what the pruner stops, asks for new trials
while fewer than `batch` are in flight, and submits them as one array per ask.

Exact after any interruption, in the submission's own discipline: every step is a write that the
next step can find and finish.
  1. ask: the Optuna trial is created with the run's trial number on it (search/study.py);
  2. the trials go into the manifest (trials.jsonl), then the plan gets their array nodes;
  3. the submitter records an intent before each sbatch and reconciles one by name.
A call that stops after 1 finds the study's trials beyond the manifest and writes them down; after
2, trials beyond the plan and plans them; after 3, the intents. No trial is asked for twice: the
study's own count of trials is what is compared with n_trials.

Pruned trials are cancelled in Slurm and told PRUNED to the study; they are not failures: the
monitor's retry policy skips their tasks, and the stages that wait for every trial (a report, a
failure handler) are planned only when the search has ended, with a pruned task counted as done.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slurmflow.backends.base import Backend
from slurmflow.errors import CommandError
from slurmflow.experiment.sweep import trial_id
from slurmflow.model import JobNode, Objective, Plan, Search, Stage, Trial
from slurmflow.planning import planner
from slurmflow.run.submission import submit_run
from slurmflow.rundir import metrics
from slurmflow.rundir.events import Action, ActionFailed, Asked, Pruned, SearchDone, Told
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.search import space, study
from slurmflow.slurm.types import ClusterInfo, JobInfo, JobState

if TYPE_CHECKING:
    import optuna

PRUNE_MARKER = metrics.PRUNE_MARKER


def deferred(stages: Mapping[str, Stage]) -> set[str]:
    """Stages that run once but wait (directly or not) for a per-trial stage: they can be planned
    only when every trial is known, at the end of the search."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s in stages.values():
            if s.name in out or s.per_trial:
                continue
            if any(stages[d.stage].per_trial or d.stage in out for d in s.deps):
                out.add(s.name)
                changed = True
    return out


def round_plan(old: Plan, sizes: Sequence[int], *, final: bool) -> Plan:
    """The plan with one array per batch (`sizes`), the nodes already planned kept exactly as they
    were (they may be submitted), new ones after them in topological order."""
    stages = old.stages if final else {k: v for k, v in old.stages.items() if k not in deferred(old.stages)}
    fresh = planner.plan(old.experiment, stages, sum(sizes), ClusterInfo(max_array_size=2**31), chunks=sizes)
    kept = {n.key for n in old.nodes}
    nodes = (*old.nodes, *(n for n in fresh.nodes if n.key not in kept))
    return Plan(old.experiment, old.stages, nodes, sum(sizes), fresh.gpu_hours, fresh.gpu_hours_unbounded)


def batch_sizes(plan: Plan) -> list[int]:
    """The sizes of the plan's arrays, one per batch: those of its first per-trial stage."""
    first = next((n.stage for n in plan.nodes if n.array), None)
    return [n.size for n in plan.nodes if n.stage == first]


def trial_hours(stages: Mapping[str, Stage]) -> tuple[float | None, float | None]:
    """(GPU-hours, hours) one trial may take at most: its per-trial stages' limits. None where a
    stage with GPUs (or any stage, for hours) has no time limit."""
    gpu, hours = 0.0, 0.0
    for s in stages.values():
        if not s.per_trial:
            continue
        h = s.resources.hours()
        if h is None:
            return (None if s.resources.gpus or gpu is None else gpu), None
        hours += h
        gpu += h * s.resources.gpus
    return gpu, hours


@dataclass
class Advance:
    """What one call did: the actions to show, and whether the search has ended (nothing in flight,
    nothing more to ask for, the closing stages planned)."""

    actions: list[Action] = field(default_factory=list)
    finished: bool = False


@dataclass
class _Run:
    store: RunStore
    backend: Backend
    search: Search
    objs: tuple[Objective, ...]
    launch: dict[str, Any]
    clock: Callable[[], float]
    out: Advance = field(default_factory=Advance)

    def record(self, event: Action) -> None:
        self.store.append(event)
        self.out.actions.append(event)

    def submit(self) -> None:
        """Every node of the plan not yet submitted (intents reconciled first). The run's lock is
        held by `advance`."""
        submit_run(self.store, self.backend, resume=True, lock=False)


def advance(
    store: RunStore,
    backend: Backend,
    *,
    jobs: Mapping[str, JobInfo] | None = None,
    clock: Callable[[], float] = time.time,
) -> Advance:
    """One step of the search (see the module docstring). `jobs` is the tick's query of the run's
    tasks, by Slurm id (queried here when not given)."""
    launch = store.read_json("launch.json")
    search = study.spec(launch)
    if search is None:
        return Advance(finished=True)
    run = _Run(store, backend, search, study.objectives(launch), launch, clock)
    with store.lock():
        known = store.trial_count()
        st = study.load(store, search, run.objs, asked=known)
        study.discard_orphans(st)
        _write_down(run, study.unrecorded(st, known))
        _plan_unplanned(run)
        state, plan = store.state(), store.plan()
        if plan.nodes and set(n.key for n in plan.nodes) - set(state.submitted) - set(state.skipped):
            run.submit()
            state = store.state()
        if jobs is None:
            jobs = backend.query(state.jobs(plan, holding=True)).by_id() if state.submitted else {}
        in_flight = _judge(run, st, plan, state, jobs)
        asked = len(study.by_trial(st))  # trials of the run: an orphan of a dead call is none
        room = min(search.batch - in_flight, search.n_trials - asked)
        room, stop = _budget(run, plan, state, jobs, room)
        if room > 0:
            st = study.load(store, search, run.objs, asked=asked)
            proposed = study.ask(st, search, store.trial_count(), room)
            _write_down(run, proposed)
            _plan_unplanned(run)
            run.submit()
            in_flight += room
        elif in_flight == 0 and (asked >= search.n_trials or stop is not None):
            _finish(run, stop or f"{asked} of {search.n_trials} trials asked for")
    return run.out


def _write_down(run: _Run, proposed: Sequence[study.Proposed]) -> None:
    """Proposed trials into the manifest (each with its override text and typed values)."""
    if not proposed:
        return
    params = {p.name: p for p in run.search.params}
    trials = []
    for p in proposed:
        overrides = tuple(space.override(params[k], v) for k, v in sorted(p.params.items(), key=_order(run.search)))
        values = None if any(params[k].group for k in p.params) else tuple((k, p.params[k]) for k in params)
        trials.append(Trial(p.trial, trial_id(overrides), overrides, values))
    run.store.append_trials(trials)
    numbers = tuple(p.trial for p in proposed)
    words = f"trial {numbers[0]}" if len(numbers) == 1 else f"trials {numbers[0]}-{numbers[-1]}"
    run.record(Asked(task=words, node="search", trials=numbers, why="asked of the study", t=run.clock()))


def _order(search: Search) -> Callable[[tuple[str, Any]], int]:
    rank = {p.name: i for i, p in enumerate(search.params)}
    return lambda kv: rank.get(kv[0], len(rank))


def _plan_unplanned(run: _Run) -> None:
    """The manifest's trials beyond the plan get one array node per stage (one batch)."""
    plan = run.store.plan()
    total = run.store.trial_count()
    if total <= plan.n_trials:
        return
    limit = int(run.launch.get("max_array_size") or 1001)
    extra = planner.chunk_sizes(total - plan.n_trials, limit)
    new = round_plan(plan, [*batch_sizes(plan), *extra], final=False)
    run.store.write_json("plan.json", plan_to_dict(new))


def trial_tasks(plan: Plan, state: RunState, trial: int) -> list[tuple[JobNode, str | None]]:
    """A trial's tasks: (node, Slurm id or None while unsubmitted), in stage order."""
    out: list[tuple[JobNode, str | None]] = []
    for n in plan.nodes:
        if n.array and n.offset <= trial < n.offset + n.size:
            job = state.job_of(n.key, trial - n.offset)
            out.append((n, None if job is None else f"{job}_{trial - n.offset}"))
    return out


def _judge(run: _Run, st: optuna.Study, plan: Plan, state: RunState, jobs: Mapping[str, JobInfo]) -> int:
    """Tell the study what ended, report what runs (and prune it), finish cancelling what was
    pruned. Returns the trials still in flight."""
    from optuna.trial import TrialState

    in_flight = 0
    for trial, frozen in sorted(study.by_trial(st).items()):
        if frozen.state.is_finished():
            if trial not in state.told:  # told by a call that stopped before its event
                values = tuple(frozen.values or ())
                run.record(_told(run, trial, frozen.state.name, values))
            continue
        tasks = trial_tasks(plan, state, trial)
        infos = [jobs.get(key) if key else None for _, key in tasks]
        ended = bool(tasks) and all(i is not None and i.state.final for i in infos)
        live = [key for (_, key), i in zip(tasks, infos, strict=True) if key and not (i and i.state.final)]
        if trial in state.pruned:
            if ended:
                st.tell(frozen.number, state=TrialState.PRUNED)
                run.record(_told(run, trial, "PRUNED", ()))
            else:
                in_flight += 1
                _cancel_pruned(run, trial, live)
            continue
        reported = metrics.read(run.store.path("trials", str(trial)))
        if ended:
            _tell(run, st, frozen, trial, infos, reported)
            continue
        in_flight += 1
        running = any(i is not None and i.state is JobState.RUNNING for i in infos)
        if run.search.pruner and len(run.objs) == 1 and running:
            _maybe_prune(run, st, frozen, trial, live, reported)
    return in_flight


def _told(run: _Run, trial: int, state: str, values: tuple[float, ...]) -> Told:
    shown = ", ".join(f"{o.metric}={v:g}" for o, v in zip(run.objs, values, strict=False))
    why = f"{state}" + (f": {shown}" if shown else "")
    return Told(task=f"trial {trial}", node="search", trial=trial, state=state, values=values, why=why, t=run.clock())


def _tell(
    run: _Run,
    st: optuna.Study,
    frozen: optuna.trial.FrozenTrial,
    trial: int,
    infos: Sequence[JobInfo | None],
    reported: Mapping[str, metrics.StageMetrics],
) -> None:
    from optuna.trial import TrialState

    completed = all(i is not None and i.state is JobState.COMPLETED for i in infos)
    values = [study.objective_value(reported, o) for o in run.objs]
    if completed and values and all(v is not None for v in values):
        numbers = [float(v) for v in values if v is not None]
        st.tell(frozen.number, numbers)
        run.record(_told(run, trial, "COMPLETE", tuple(numbers)))
    else:
        st.tell(frozen.number, state=TrialState.FAIL)
        why = "no value of the objective" if completed else "a task did not complete"
        run.record(
            Told(task=f"trial {trial}", node="search", trial=trial, state="FAIL", why=f"FAIL: {why}", t=run.clock())
        )


def _maybe_prune(
    run: _Run,
    st: optuna.Study,
    frozen: optuna.trial.FrozenTrial,
    trial: int,
    live: list[str],
    reported: Mapping[str, metrics.StageMetrics],
) -> None:
    """Report the steps logged since the last call; prune when the pruner says so."""
    import optuna

    points = study.curve(reported, run.objs[0], run.search.prune_stage)
    new = sorted(s for s in points if s not in frozen.intermediate_values)
    if not new:
        return
    live_trial = optuna.trial.Trial(st, frozen._trial_id)
    for step in new:
        live_trial.report(points[step], step)
    if not live_trial.should_prune():
        return
    marker = run.store.path("trials", str(trial), PRUNE_MARKER)
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{new[-1]}\n")
    why = f"pruned at step {new[-1]} ({run.search.pruner}): value {points[new[-1]]:g}"
    run.record(
        Pruned(
            task=live[0] if live else f"trial {trial}",
            node="search",
            trial=trial,
            step=new[-1],
            tasks=tuple(live),
            why=why,
            t=run.clock(),
        )
    )
    if run.search.grace_s <= 0:
        _scancel(run, trial, live)


def _cancel_pruned(run: _Run, trial: int, live: list[str]) -> None:
    """A pruned trial whose tasks still run: cancelled once its grace (time to stop itself after
    `should_stop()`) is over, and again on later calls until Slurm shows them ended."""
    if not live:
        return
    marker = run.store.path("trials", str(trial), PRUNE_MARKER)
    try:
        since = marker.stat().st_mtime
    except OSError:
        since = 0.0
    if run.clock() - since >= run.search.grace_s:
        _scancel(run, trial, live)


def _scancel(run: _Run, trial: int, live: list[str]) -> None:
    if not live:
        return
    try:
        run.backend.cancel(live)
    except CommandError as exc:
        why = " ".join(str(exc).split())
        run.record(ActionFailed(task=live[0], node="search", action="prune", why=why, t=run.clock()))


def _budget(run: _Run, plan: Plan, state: RunState, jobs: Mapping[str, JobInfo], room: int) -> tuple[int, str | None]:
    """How many trials may be asked for now, and why no more may be asked for ever (None: they
    may, later): the wall-clock deadline, or the GPU-hour budget (what ended trials used, from
    accounting, plus the worst case of those in flight and of the new ones)."""
    if room <= 0:
        return room, None
    now = run.clock()
    gpu_h, hours = trial_hours(plan.stages)
    if run.search.deadline_s is not None:
        started = state.started or now
        end = started + run.search.deadline_s
        if now + (hours or 0.0) * 3600 > end:
            return 0, f"the deadline ({run.search.deadline_s / 3600:g} h after launch) would be passed"
    if run.search.max_gpu_hours is not None and gpu_h:
        budget = run.search.max_gpu_hours
        spent = _gpu_hours(run, plan, state, jobs)
        fits = max(0, math.floor((budget - spent) / gpu_h + 1e-9))
        if fits < 1:
            return 0, f"the GPU-hour budget ({budget:g}) would be exceeded: {spent:.2f} spent or committed"
        room = min(room, fits)
    return room, None


def _gpu_hours(run: _Run, plan: Plan, state: RunState, jobs: Mapping[str, JobInfo]) -> float:
    """GPU-hours of the trials so far: ended tasks as accounting measured them, the rest at the
    worst case of their stage."""
    ids = state.jobs(plan)
    used = 0.0
    ended: set[str] = set()
    if ids:
        try:
            for a in run.backend.history(ids):
                if a.start is not None and a.end is not None:
                    used += (a.end - a.start) * a.gpus / 3600
                    ended.add(a.job_id)
        except CommandError:
            pass
    for n in plan.nodes:
        if not n.array:
            continue
        stage = plan.stages[n.stage]
        h = stage.resources.hours() or 0.0
        for i in range(n.size):
            job = state.job_of(n.key, i)
            key = f"{job}_{i}"
            info = jobs.get(key)
            if job is None or (info is not None and info.state.final) or key in ended:
                continue
            used += h * stage.resources.gpus
    return used


def _finish(run: _Run, why: str) -> None:
    """Nothing in flight, nothing more to ask: plan the stages that wait for every trial."""
    state = run.store.state()
    if not state.search_done:
        run.record(SearchDone(task="search", node="search", why=f"the search has ended: {why}", t=run.clock()))
    plan = run.store.plan()
    final = round_plan(plan, batch_sizes(plan), final=True)
    if len(final.nodes) != len(plan.nodes):
        run.store.write_json("plan.json", plan_to_dict(final))
    state = run.store.state()
    if {n.key for n in final.nodes} - set(state.submitted) - set(state.skipped):
        run.submit()
    run.out.finished = True
