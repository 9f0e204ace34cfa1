"""Walk the plan in topological order and submit it: idempotent, resumable, never twice.

Before each sbatch an intent is fsync'd to the run's event log, after it the job id. A node with
an intent but no id (a crash, a kill -9, an ambiguous "Socket timed out") is reconciled with Slurm
by its job name before anything is submitted again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

from slurmflow.backends.base import Backend
from slurmflow.errors import (
    ControllerFull,
    ControllerUnavailable,
    PolicyViolation,
    SubmissionAmbiguous,
    SubmissionRefused,
)
from slurmflow.model import JobNode, Plan
from slurmflow.planning.jobs import job_name, node_spec
from slurmflow.rundir.events import ControllerBusy, ControllerGone, Intent, LaunchComplete, Refused, Skipped, Submitted
from slurmflow.rundir.state import RunState
from slurmflow.rundir.store import RunStore
from slurmflow.slurm import sbatch
from slurmflow.slurm.backoff import Backoff
from slurmflow.slurm.types import DepKind, JobInfo, JobSpec, JobState

Progress = Callable[[JobNode, str], None]


@dataclass(frozen=True)
class Context:
    run_id: str
    script: Callable[[JobNode], str]  # the script body of a node
    logs_dir: str
    chdir: str
    hold: bool = False  # submit held (sbatch --hold); `scontrol release` starts them
    # Submits a callable stage's node through submitit; None: callables go through the script.
    submit_callable: Callable[[JobNode, JobSpec], str] | None = None
    # A controller that does not answer is asked again after 1 s, doubling up to 30 s, for 10
    # minutes in all (slurmctld restarts take seconds to minutes).
    backoff: Backoff = field(default_factory=lambda: Backoff(patience=600.0))
    clock: Callable[[], float] = time.time  # the time every event of the submission is stamped with


def _reconcile(backend: Backend, run_id: str, key: str) -> str | None:
    """The job id Slurm holds for this node, if an earlier attempt did create it."""
    found = backend.query(name=job_name(run_id, key)).jobs
    bases = sorted({j.base_id for j in found}, key=int)
    return bases[0] if bases else None


def _submit_node(
    backend: Backend, store: RunStore, ctx: Context, node: JobNode, spec: JobSpec, script: str, *, via_submitit: bool
) -> str:
    """One node's sbatch, with its intent already recorded. A controller that does not answer
    (restarting, overloaded) is asked again with a growing delay (ctx.backoff); before each new try
    the job is looked up by name, as the RPC may have reached it."""

    def attempt(tries: int) -> str:
        if tries:
            found = _reconcile(backend, ctx.run_id, node.key)
            if found:
                return found
        return _submit_once(backend, store, ctx, node, spec, script, via_submitit=via_submitit)

    def waiting(delay: float, _exc: BaseException) -> None:
        store.append(ControllerBusy(node=node.key, retry_in=delay, t=ctx.clock()))

    try:
        return ctx.backoff.run(attempt, transient=(ControllerUnavailable,), on_wait=waiting)
    except ControllerUnavailable as exc:
        store.append(ControllerGone(node=node.key, slurm=_last_line(exc), t=ctx.clock()))
        raise SubmissionRefused(
            f"the Slurm controller did not answer for {ctx.backoff.patience:g} s ({_last_line(exc)}) while "
            f"submitting {node.key}; once it is back, `slurmflow resume {ctx.run_id}` submits the rest, "
            "none twice",
            node=node.key,
            cause=exc,
        ) from exc


def _submit_once(
    backend: Backend, store: RunStore, ctx: Context, node: JobNode, spec: JobSpec, script: str, *, via_submitit: bool
) -> str:
    try:
        if via_submitit:
            assert ctx.submit_callable is not None
            return ctx.submit_callable(node, spec)
        return backend.submit(spec, script)
    except SubmissionAmbiguous:
        # The job may exist: look for it by name before trying again, or it would run twice.
        found = _reconcile(backend, ctx.run_id, node.key)
        return found if found else backend.submit(spec, script)
    except (ControllerFull, PolicyViolation) as exc:
        # A limit Slurm enforces: stop here. What is submitted stays; the intent makes resume
        # look this node up by name before it submits it, so nothing can run twice.
        why = "MaxJobCount" if isinstance(exc, ControllerFull) else "submit limit"
        store.append(Refused(node=node.key, why=why, slurm=_last_line(exc), t=ctx.clock()))
        raise SubmissionRefused(
            f"Slurm refused {node.key}: {_last_line(exc)}; once it fits, run `slurmflow resume {ctx.run_id}`",
            node=node.key,
            cause=exc,
        ) from exc
    except ControllerUnavailable:
        raise
    except Exception:
        if not via_submitit:
            raise
        # submitit's own sbatch failed: it may still have created the job.
        found = _reconcile(backend, ctx.run_id, node.key)
        if not found:
            raise
        return found


def _last_line(exc: Exception) -> str:
    text = (getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or str(exc)).strip().splitlines()
    return text[-1].removeprefix("sbatch: error: ").strip() if text else str(exc)


def _outcome(tasks: list[JobInfo], pruned: Set[str] = frozenset()) -> str:
    """'running' while any task is not final, else 'ok' if all completed, else 'failed'. A task a
    search pruned counts as done: its trial was stopped on purpose, nothing failed."""
    if not tasks or not all(t.state.final for t in tasks):
        return "running"
    return "ok" if all(t.state is JobState.COMPLETED or t.job_id in pruned for t in tasks) else "failed"


def _current_tasks(node: JobNode, state: RunState, by_id: Mapping[str, JobInfo]) -> list[JobInfo]:
    """Each task of a node as its current job reports it; empty while any is unknown to Slurm."""
    out = []
    for task in range(node.size) if node.array else [None]:
        job = state.job_of(node.key, task)
        info = by_id.get(f"{job}_{task}" if task is not None else str(job))
        if info is None:
            return []
        out.append(info)
    return out


def _resolve_finished_parents(
    node: JobNode, outcomes: Mapping[str, str], skipped: set[str]
) -> tuple[frozenset[str], bool]:
    """Edges to parents that already finished. Slurm forgets a finished job after MinJobAge and then
    rejects (24.11) or ignores (22.05) a dependency on it, so those edges are resolved here.
    Returns (parents to drop, whether the node can still run)."""
    dropped: set[str] = set()
    for edge in node.edges:
        outcome = "failed" if edge.parent in skipped else outcomes.get(edge.parent, "running")
        if outcome == "running":
            continue
        satisfied = {
            DepKind.AFTER_OK: outcome == "ok",
            DepKind.AFTER_CORR: outcome == "ok",
            DepKind.AFTER_ANY: True,
            DepKind.AFTER_NOT_OK: outcome == "failed",
        }[edge.kind]
        if satisfied:
            dropped.add(edge.parent)
        elif not node.any_of:
            return frozenset(dropped), False
    if node.any_of and node.edges and all(e.parent not in dropped for e in node.edges):
        ended = all(
            ("failed" if e.parent in skipped else outcomes.get(e.parent, "running")) != "running" for e in node.edges
        )
        if ended:
            return frozenset(), False
    return frozenset(dropped), True


def submit(
    plan: Plan,
    backend: Backend,
    store: RunStore,
    ctx: Context,
    *,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Submit every node not yet submitted. Returns node key -> job id."""
    state = store.state()
    if resume and state.intents:
        for key in sorted(state.intents):
            job_id = _reconcile(backend, ctx.run_id, key)
            if job_id:
                store.append(Submitted(node=key, job_id=job_id, reconciled=True, t=ctx.clock()))
        state = store.state()
    outcomes: dict[str, str] = {}
    if resume and state.submitted:
        # One batched query for the jobs that hold the run's tasks now: a task the monitor
        # resubmitted (out of memory) or `slurmflow retry` moved is judged by its new job.
        by_id = backend.query(state.jobs(plan, holding=True)).by_id()
        pruned = state.pruned_tasks
        outcomes = {
            n.key: _outcome(_current_tasks(n, state, by_id), pruned) for n in plan.nodes if n.key in state.submitted
        }
    ids = dict(state.submitted)
    skipped = set(state.skipped)
    for node in plan.nodes:
        if node.key in ids or node.key in skipped:
            continue
        dropped, runnable = _resolve_finished_parents(node, outcomes, skipped)
        if not runnable:
            skipped.add(node.key)
            store.append(Skipped(node=node.key, why="a parent already ended so it can never run", t=ctx.clock()))
            if progress:
                progress(node, "skipped")
            continue
        spec = node_spec(
            node,
            plan.stages[node.stage],
            ids,
            run_id=ctx.run_id,
            script=ctx.script(node),
            logs_dir=ctx.logs_dir,
            chdir=ctx.chdir,
            dropped=dropped,
        )
        if ctx.hold:
            spec = dataclasses.replace(spec, extra_args=(*spec.extra_args, "--hold"))
        script_path = store.write_text(f"scripts/{node.key}.sh", sbatch.render_script(spec), executable=True)
        store.append(Intent(node=node.key, t=ctx.clock()))
        via_submitit = ctx.submit_callable is not None and plan.stages[node.stage].callable is not None
        job_id = _submit_node(backend, store, ctx, node, spec, str(script_path), via_submitit=via_submitit)
        store.append(Submitted(node=node.key, job_id=job_id, t=ctx.clock()))
        ids[node.key] = job_id
        if progress:
            progress(node, job_id)
    store.append(LaunchComplete(t=ctx.clock()))
    return ids
