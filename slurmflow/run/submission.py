"""Submitting a written run: the submitter's context (each node's script, logs, working
directory) and one call that submits every node not yet submitted, with Slurm's refusals told with
the limit's numbers. Hydra-free: the monitor submits a search's new trials through it."""

from __future__ import annotations

import contextlib
import shlex

from slurmflow.backends.base import Backend
from slurmflow.errors import ControllerFull, PolicyViolation, SlurmflowError, SubmissionRefused
from slurmflow.model import JobNode, Plan
from slurmflow.run.submitter import Context, Progress, submit
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobSpec


def context(store: RunStore, *, hold: bool = False, submitit: bool = False, plan: Plan | None = None) -> Context:
    launch = store.read_json("launch.json")
    python, root = launch["python"], str(store.root)
    plan = plan or store.plan()

    def submit_callable(node: JobNode, spec: JobSpec) -> str:
        from slurmflow.run import callables  # submitit and the job wrapper: only for callable stages

        res = plan.stages[node.stage].resources
        return callables.submit(spec, node, res, run_dir=store.root, python=python, hold=hold)

    def script(node: JobNode) -> str:
        return f"exec {shlex.quote(python)} -m slurmflow.job {shlex.quote(root)} {shlex.quote(node.key)}"

    return Context(
        run_id=store.run_id,
        script=script,
        logs_dir=str(store.logs_dir),
        chdir=launch["cwd"],
        hold=hold,
        submit_callable=submit_callable if submitit else None,
    )


def submit_run(
    store: RunStore,
    backend: Backend,
    *,
    resume: bool = False,
    hold: bool = False,
    progress: Progress | None = None,
    lock: bool = True,
) -> dict[str, str]:
    """Submit what is not yet submitted. `lock=False`: the caller holds the run's lock already."""
    # submitit runs sbatch itself, so it is used only where Slurm's commands run directly.
    submitit = backend.runs_submitit
    with store.lock() if lock else contextlib.nullcontext():
        plan = store.plan()
        ctx = context(store, hold=hold, submitit=submitit, plan=plan)
        try:
            return submit(plan, backend, store, ctx, resume=resume, progress=progress)
        except SubmissionRefused as exc:
            if not isinstance(exc.cause, (ControllerFull, PolicyViolation)):
                raise  # the controller went away: its message says all there is to say
            raise SubmissionRefused(_refusal(store, plan, backend, exc), node=exc.node, cause=exc.cause) from exc


def _refusal(store: RunStore, plan: Plan, backend: Backend, exc: SubmissionRefused) -> str:
    """The refusal with the limit's numbers, as far as the cluster tells them."""
    from slurmflow.planning.limits import refusal_message

    node = plan.node(exc.node)
    config, usages, user, qos_limits = None, [], None, {}
    acct = backend.accounting()
    if acct is not None:  # a scheduler that keeps limits says which one refused
        with contextlib.suppress(SlurmflowError):
            config = backend.config()
        with contextlib.suppress(SlurmflowError):
            usages, user = acct.usage(), acct.whoami()
        with contextlib.suppress(SlurmflowError):
            qos_limits = acct.qos_submit_limits()
    return refusal_message(
        run_id=store.run_id,
        node=node.key,
        tasks=node.size if node.array else 1,
        submitted=len(store.state().submitted),
        total=len(plan.nodes),
        cause=exc.cause,
        config=config,
        usages=usages,
        user=user,
        account=plan.stages[node.stage].resources.account,
        qos=plan.stages[node.stage].resources.qos,
        qos_limits=qos_limits,
    )
