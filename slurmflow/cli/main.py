"""The `slurmflow` command: thin commands over the library, rich output, --json for scripts."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from slurmflow._version import __version__
from slurmflow.backends.local import LocalSlurm, detect_gpus
from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.cli import args as cliargs
from slurmflow.errors import CommandError, CommandNotFound, SlurmflowError, SlurmNotConfigured, UsageError
from slurmflow.model import Plan
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm.runner import SubprocessRunner
from slurmflow.slurm.types import JobState

if TYPE_CHECKING:
    from slurmflow.backends.base import Backend
    from slurmflow.monitoring.status import CampaignStatus
    from slurmflow.quota.budget import Verdict
    from slurmflow.quota.fit import Fit
    from slurmflow.run.launch import Prepared

# Commands import Hydra (via slurmflow.run.launch) only when they need it: `--help`, `--version` and
# `cluster` answer in a tenth of the time.

PREFIX_ENV = "SLURMFLOW_SLURM_PREFIX"
RUNS_ENV = "SLURMFLOW_RUNS_DIR"


def make_backend(prefix: str | None = None) -> SlurmCLI:
    """The Slurm backend. A prefix (or $SLURMFLOW_SLURM_PREFIX) runs every Slurm command through
    another program, e.g. `docker exec -i -u alice slurmflow-mini` or `ssh login1`."""
    words = shlex.split(prefix if prefix is not None else os.environ.get(PREFIX_ENV, ""))
    return SlurmCLI(SubprocessRunner(prefix=tuple(words)))


@dataclass
class _Partition:
    default: bool = False
    nodes: list[str] = field(default_factory=list)
    gpus: int = 0
    states: set[str] = field(default_factory=set)


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    backend = make_backend(args.via)
    config = backend.config()
    nodes = backend.nodes()
    if args.json:
        doc = {
            "slurm_version": config.version,
            "max_array_size": config.max_array_size,
            "max_job_count": config.max_job_count,
            "min_job_age_s": config.min_job_age_s,
            "nodes": nodes,
        }
        print(json.dumps(doc, indent=2))
        return 0
    partitions: dict[str, _Partition] = {}
    for n in nodes:
        p = partitions.setdefault(str(n["partition"]), _Partition(default=bool(n["default"])))
        p.nodes.append(str(n["node"]))
        p.gpus += int(n["gpus"])
        p.states.add(str(n["state"]))
    table = Table(
        title=f"Slurm {config.version}: MaxArraySize {config.max_array_size}, "
        f"MaxJobCount {config.max_job_count}, MinJobAge {config.min_job_age_s} s"
    )
    for col in ("partition", "nodes", "GPUs", "state"):
        table.add_column(col)
    for name, p in sorted(partitions.items()):
        label = name + (" (default)" if p.default else "")
        table.add_row(label, ",".join(p.nodes), str(p.gpus), ",".join(sorted(p.states)))
    console.print(table)
    return 0


def _backend_kind(args: argparse.Namespace) -> str:
    if args.backend != "auto":
        return str(args.backend)
    has_slurm = args.via or os.environ.get(PREFIX_ENV) or shutil.which("sbatch")
    return "slurm" if has_slurm else "local"


def _local(args: argparse.Namespace, console: Console) -> LocalSlurm:
    gpus = args.local_gpus
    if gpus is None:
        gpus = detect_gpus()
        if gpus == 0:
            gpus = 4
            console.print(
                "[yellow]no GPU on this machine: GPU stages run on the CPU with 4 GPU slots[/]",
                highlight=False,
            )
    return LocalSlurm(gpus=gpus)


def _prepare(args: argparse.Namespace, console: Console) -> tuple[Prepared, Backend, LocalSlurm | None]:
    """The planned campaign, the backend it goes to, and the local engine when that is the one
    (a foreground launch drives it to the end)."""
    from slurmflow.run.launch import prepare

    local = _local(args, console) if _backend_kind(args) == "local" else None
    backend: Backend = local if local is not None else make_backend(args.via)
    prep = prepare(
        Path(args.config_dir),
        args.config_name,
        args.overrides,
        backend.cluster_info(),
        max_array_size=args.max_array_size,
        max_tasks=args.max_tasks,
    )
    return prep, backend, local


def _budget(args: argparse.Namespace, prep: Prepared, backend: Backend, console: Console, *, refuse: bool) -> list[Fit]:
    """GPU-hours and peak GPUs against what the accounts have left (Slurm backends only): a launch
    that cannot fit is refused unless --force; plan only says so."""
    from slurmflow.quota.budget import judge

    accounting = backend.accounting()
    if accounting is None:
        return []
    verdict = judge(prep.plan, accounting, prep.cluster.user)
    say_budget(verdict, console, force=args.force, planning=not refuse)
    return verdict.fits


def say_budget(verdict: Verdict, console: Console, *, force: bool, planning: bool) -> None:
    """A launch stops at the first refusal unless forced (then each is a warning); plan says what
    launch would refuse. Notes are said either way."""
    for refusal in verdict.refusals:
        if planning:
            console.print(f"[bold yellow]launch would refuse this campaign:[/] {refusal}", highlight=False)
        elif not force:
            raise UsageError(refusal)
        else:
            console.print(f"[bold yellow]warning (--force):[/] {refusal}", highlight=False)
    for note in verdict.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.cli import views

    prep, backend, local = _prepare(args, console)
    fits = _budget(args, prep, backend, console, refuse=False)
    if args.json:
        doc = {
            "backend": "local" if local is not None else "slurm",
            "quota": [f.to_dict() for f in fits],
            "plan": plan_to_dict(prep.plan),
            "tasks": prep.plan.tasks(),
            "axes": {a.key: list(a.values) for a in prep.experiment.axes},
        }
        print(json.dumps(doc, indent=2))
        return 0
    console.print(views.plan_tree(prep))
    if getattr(args, "scripts", False):
        for node in prep.plan.nodes:
            console.rule(node.key)
            console.print(views.script_preview(prep, node), highlight=False, markup=False)
    return 0


def _run_local(backend: LocalSlurm, ids: dict[str, str], console: Console) -> int:
    from rich.progress import Progress

    from slurmflow.cli import views

    total = len(backend.query(list(ids.values())).jobs)
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("running locally", total=total)
        while True:
            backend.advance()
            jobs = backend.query(list(ids.values())).jobs
            done = sum(1 for j in jobs if j.state.final)
            bar.update(task, completed=done)
            if done == len(jobs):
                break
            time.sleep(0.2)
    failed = [j for j in jobs if j.state.final and not j.state.succeeded]
    console.print(views.final_table(jobs))
    return 1 if any(j.state in (JobState.FAILED, JobState.TIMEOUT) for j in failed) else 0


def cmd_launch(args: argparse.Namespace, console: Console) -> int:
    if args.dry_run:
        return cmd_plan(args, console)
    from slurmflow.run.launch import submit_run, write_run

    prep, backend, local = _prepare(args, console)
    if args.hold and local is not None:
        raise UsageError("--hold needs Slurm: the local backend runs jobs as soon as they are submitted")
    fits = _budget(args, prep, backend, console, refuse=True)
    store = write_run(prep, Path(args.runs_dir), cwd=Path.cwd(), python=sys.executable, argv=sys.argv)
    kind = "local" if local is not None else "slurm"
    store.write_json("backend.json", {"backend": kind, "via": args.via or os.environ.get(PREFIX_ENV)})
    backend.save_capabilities(store.path("capabilities.json"))
    ids = submit_run(store, backend, hold=args.hold)
    code = _run_local(local, ids, console) if local is not None else 0
    _report_launch(args, console, store, prep.plan, ids, fits)
    return code


def _run_backend(store: RunStore, via: str | None) -> SlurmCLI:
    """The Slurm backend a run was launched through (its recorded prefix, unless --via is given)."""
    recorded = store.read_json("backend.json") if store.path("backend.json").exists() else {"backend": "slurm"}
    if recorded["backend"] == "local":
        raise UsageError(f"run {store.run_id} ran on the local backend, whose jobs ended with it: launch it again")
    backend = make_backend(via if via is not None else recorded.get("via"))
    backend.capabilities_cache = store.path("capabilities.json")  # probed once, at launch
    return backend


def _campaign(store: RunStore, backend: Backend) -> CampaignStatus:
    from slurmflow.monitoring.status import summarise
    from slurmflow.rundir.state import reduce

    events, unreadable = store.read_events()
    plan, state = store.plan(), reduce(events)
    ids = state.jobs(plan, holding=True)
    result = backend.query(ids) if ids else None
    return summarise(
        store.run_id,
        plan,
        state.submitted,
        result.jobs if result else (),
        logs_dir=str(store.path("logs")),
        started=time.time() if state.started is None else state.started,
        now=time.time(),
        accounting_available=result.accounting_available if result else True,
        skipped=sorted(state.skipped),
        actions=state.actions,  # runstate.SHOWN: requeues, rewires, refused actions, idle GPUs, ...
        moved=state.moved,
        unreadable=unreadable,
    )


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.cli import views
    from slurmflow.monitoring.status import to_dict

    store = RunStore.open(args.run, Path(args.runs_dir))
    backend = _run_backend(store, args.via)
    if args.json:
        print(json.dumps(to_dict(_campaign(store, backend), tasks=args.tasks), indent=2))
        return 0
    if not args.watch:
        console.print(views.status_view(_campaign(store, backend), tasks=args.tasks))
        return 0
    from rich.live import Live

    # One batched query per refresh; the interval doubles (up to 60 s) while nothing changes.
    interval, last = args.interval, None
    with Live(console=console, auto_refresh=False) as live:
        while True:
            st = _campaign(store, backend)
            live.update(views.status_view(st, tasks=args.tasks), refresh=True)
            if st.done:
                return 0
            snapshot = [(t.job_id, t.state) for t in st.tasks]
            interval = min(60.0, interval * 2) if snapshot == last else args.interval
            last = snapshot
            time.sleep(interval)


def cmd_gpu(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from slurmflow.cli import views
    from slurmflow.gpu.usage import collect

    store = RunStore.open(args.run, Path(args.runs_dir))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("reading GPU samples", total=None)
        run = collect(store, progress=lambda n: bar.update(task, completed=n))
    if args.plot:
        from slurmflow.gpu.report import plot

        out = plot(run, Path(args.plot))
        console.print(f"wrote {out}")
    if args.json:
        print(json.dumps(run.to_dict(), indent=2))
    else:
        console.print(views.gpu_view(run, limit=len(run.tasks) if args.all else 50))
    return 0


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.run.cancel import cancel

    store = RunStore.open(args.run, Path(args.runs_dir))
    backend = _run_backend(store, args.via)
    done = cancel(store, backend, stage=args.stage)
    if args.json:
        print(json.dumps({"run_id": store.run_id, "cancelled": done.nodes, "job_ids": list(done.job_ids)}, indent=2))
    else:
        console.print(
            f"cancelled {len(done.job_ids)} live job(s) of run {store.run_id}"
            + (f", stage {args.stage}" if args.stage else "")
            + (f": {', '.join(done.job_ids)}" if done.job_ids else "")
        )
    return 0


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    store = RunStore.open(args.run, Path(args.runs_dir))
    plan = store.plan()
    if args.stage not in plan.stages:
        raise UsageError(
            f"stage {args.stage!r}: no such stage in run {store.run_id} (stages: {', '.join(plan.stages)})"
        )
    nodes = [n for n in plan.nodes if n.stage == args.stage]
    if nodes[0].array:
        if args.task is None:
            raise UsageError(
                f"stage {args.stage} runs one task per trial: give the trial index (0-{plan.n_trials - 1})"
            )
        if not 0 <= args.task < plan.n_trials:
            raise UsageError(f"trial {args.task}: out of range 0-{plan.n_trials - 1}")
        node = next(n for n in nodes if n.offset <= args.task < n.offset + n.size)
        index: int | None = args.task - node.offset
        path = store.path("logs", node.key, f"{index}.out")
    else:
        node, index = nodes[0], None
        path = store.path("logs", node.key, "job.out")
    if not path.exists():
        raise UsageError(f"no log at {path}: {_why_no_log(store, node.key, index)}")
    sys.stdout.write(path.read_text())
    return 0


def _why_no_log(store: RunStore, key: str, index: int | None) -> str:
    """What Slurm says of a task that has no log: not started yet, or ended without ever running."""
    from slurmflow.monitoring.status import exit_text, explain, launch_failed

    job = store.state().job_of(key, index)
    if job is None:
        return "the task has not been submitted"
    task = f"{job}_{index}" if index is not None else job
    try:
        info = _run_backend(store, None).query([task]).by_id().get(task)  # the run's own prefix
    except SlurmflowError:
        info = None
    if info is None:
        return "the task has not started"
    if not info.state.final:
        return f"task {task} is {info.state.name} and has not started yet"
    said = f"task {task} ended {info.state.name} (exit {exit_text(info.exit_code, info.signal)}) without writing a log"
    if launch_failed(info.state, info.reason, info.signal):
        said += f": {explain('JobLaunchFailure')}"
    return said


def _submit_monitor_job(store: RunStore, backend: Backend, args: argparse.Namespace, delay: float) -> str:
    """The first link of the monitor's job chain (slurmflow/monitoring/loop.py), `delay` seconds from now."""
    from slurmflow.monitoring import loop as monitor_job

    return monitor_job.submit(store, backend, interval=args.interval, partition=args.partition, delay=delay)


def cmd_monitor(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.errors import ControllerUnavailable
    from slurmflow.monitoring.monitor import Tick, tick
    from slurmflow.rundir import events

    store = RunStore.open(args.run, Path(args.runs_dir))
    backend = _run_backend(store, args.via)
    if args.as_job:
        job_id = _submit_monitor_job(store, backend, args, delay=1)
        console.print(
            f"monitor of run {store.run_id} runs as Slurm job {job_id}, every {args.interval:g} s; you can log out"
        )
        return 0

    def show(result: Tick) -> None:
        for action in result.actions:
            line = f"{action.kind}: {action.task} ({action.node}): {action.why}"
            if args.json:
                print(json.dumps(events.to_dict(action)), flush=True)
            else:
                console.print(line, highlight=False)
        if not result.accounting_available:
            console.print("[yellow]slurmdbd did not answer: acting on the controller's view only[/]")
        if result.done and not args.json:
            console.print(f"run {store.run_id}: every job has ended")

    if args.reschedule is not None:
        # A link of the --as-job chain: it submits its successor whatever its tick did (monitor_job.py).
        import traceback

        from slurmflow.monitoring import loop as monitor_job

        link = monitor_job.tick_and_reschedule(
            store,
            backend,
            interval=args.reschedule,
            partition=args.partition,
            this_job=os.environ.get("SLURM_JOB_ID"),
        )
        if link.tick is not None:
            show(link.tick)
        if isinstance(link.error, CommandError):
            console.print(f"[red]{link.error}[/]", highlight=False)
        elif link.error is not None:
            traceback.print_exception(link.error)  # a bug of ours: the job's log keeps the traceback
        if link.successor:
            console.print(f"next monitor job: {link.successor}")
        return link.exit_code
    interval = args.interval
    while True:
        try:
            result = tick(store, backend)
        except CommandError as exc:
            # slurmctld restarting (running jobs survive it) or a query that failed: try again later,
            # never resubmit. A refused action does not get here: the tick records it and goes on.
            what = "controller unavailable" if isinstance(exc, ControllerUnavailable) else "Slurm query failed"
            console.print(f"[yellow]{what}, retrying in {interval:g} s: {exc}[/]", highlight=False)
            if args.once:
                return 1
            time.sleep(interval)
            continue
        show(result)
        if args.once or result.done:
            return 0
        # Back off while nothing happens: one batched query per tick whatever the run's size.
        interval = args.interval if result.actions else min(args.max_interval, interval * 1.5)
        time.sleep(interval)


def cmd_retry(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.monitoring.retry import retry

    store = RunStore.open(args.run, Path(args.runs_dir))
    backend = _run_backend(store, args.via)
    with store.lock():
        new = retry(store, backend, stage=args.stage, failed_only=args.failed)
    if args.json:
        print(json.dumps({"run_id": store.run_id, "resubmitted": new}, indent=2))
    elif not new:
        console.print(f"run {store.run_id}: nothing to retry")
    else:
        for node, job_id in new.items():
            console.print(f"{node}: resubmitted as job {job_id}")
    return 0


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.run.launch import submit_run

    store = RunStore.open(args.run, Path(args.runs_dir))
    backend = _run_backend(store, args.via)
    before = store.state()
    ids = submit_run(store, backend, resume=True)
    if not args.json:
        console.print(
            f"resumed {store.run_id}: {len(ids) - len(before.submitted)} submission(s) added, "
            f"{len(before.submitted)} already in Slurm"
        )
    _report_launch(args, console, store, store.plan(), ids)
    return 0


def _report_launch(
    args: argparse.Namespace,
    console: Console,
    store: RunStore,
    plan: Plan,
    ids: dict[str, str],
    fits: Sequence[Fit] = (),
) -> None:
    from slurmflow.cli import views

    by_stage: dict[str, list[str]] = {}
    for node in plan.nodes:
        if node.key in ids:
            by_stage.setdefault(node.stage, []).append(ids[node.key])
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": store.run_id,
                    "run_dir": str(store.root),
                    "jobs": by_stage,
                    "nodes": ids,
                    "quota": [f.to_dict() for f in fits],
                },
                indent=2,
            )
        )
        return
    console.print(views.launch_summary(store.run_id, str(store.root), plan, by_stage))


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="Hydra overrides: key=value, sweeps key=a,b or key=range(0,3), +new=value",
    )
    p.add_argument("-cd", "--config-dir", default="configs", help="the config directory (default: configs)")
    p.add_argument("-cn", "--config-name", default="config", help="the primary config (default: config)")
    p.add_argument(
        "--backend",
        choices=("auto", "slurm", "local"),
        default="auto",
        help="slurm, or local processes; auto picks slurm when sbatch is found",
    )
    p.add_argument("--via", metavar="COMMAND", default=None, help=f"prefix for Slurm commands (default: ${PREFIX_ENV})")
    p.add_argument(
        "--max-array-size",
        type=cliargs.whole(1),
        default=None,
        help="split arrays below the cluster's MaxArraySize (never above it)",
    )
    p.add_argument(
        "--local-gpus", type=cliargs.whole(0), default=None, help="GPU slots of the local backend (default: detected)"
    )
    p.add_argument(
        "--max-tasks",
        type=cliargs.whole(1),
        default=int(os.environ["SLURMFLOW_MAX_TASKS"]) if os.environ.get("SLURMFLOW_MAX_TASKS", "").isdigit() else None,
        help="refuse a campaign of more tasks than this (default: $SLURMFLOW_MAX_TASKS; MaxJobCount always applies)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="submit even when the campaign's GPU-hours or tasks exceed what the account has left "
        "(Slurm holds or refuses the rest)",
    )
    p.add_argument(
        "--runs-dir",
        default=os.environ.get(RUNS_ENV, "runs"),
        help=f"where run directories go (default: ${RUNS_ENV} or ./runs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    p.add_argument("--runs-dir", default=os.environ.get(RUNS_ENV, "runs"), help="where run directories are")
    p.add_argument("--via", metavar="COMMAND", default=None, help="prefix for Slurm commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurmflow",
        description="Hydra experiments to Slurm job-array dependency graphs, submitted at once.",
    )
    parser.add_argument("--version", action="version", version=f"slurmflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from slurmflow.cli.admin import add_parsers

    cluster = sub.add_parser(
        "cluster",
        help="show partitions, nodes, GPUs and the limits planning uses",
        description="Show the cluster's partitions, nodes and GPUs, and the controller "
        "limits slurmflow plans with (MaxArraySize, MaxJobCount, MinJobAge).",
    )
    cluster.add_argument("--json", action="store_true", help="print JSON for scripts")
    cluster.add_argument(
        "--via",
        metavar="COMMAND",
        default=None,
        help=f"run Slurm commands through this prefix (default: ${PREFIX_ENV})",
    )
    cluster.set_defaults(func=cmd_cluster)

    plan = sub.add_parser(
        "plan",
        help="show the job graph a launch would submit; submits nothing",
        description="Compose the experiment, expand the sweep and show the plan: stages, arrays "
        "and chunks, dependencies, resources, GPU-hours. Nothing is written or submitted.",
    )
    _experiment_args(plan)
    plan.add_argument("--scripts", action="store_true", help="also print each submission's sbatch line and script")
    plan.set_defaults(func=cmd_plan)

    launch = sub.add_parser(
        "launch",
        help="plan, record and submit a whole campaign, then exit",
        description="Plan the experiment, write the run directory (config snapshot, trials, "
        "plan, scripts, provenance) and submit every job with Slurm dependencies; then exit.",
    )
    _experiment_args(launch)
    launch.add_argument("--dry-run", action="store_true", help="the same as `slurmflow plan`")
    launch.add_argument("--hold", action="store_true", help="submit every job held; `scontrol release` starts them")
    launch.set_defaults(func=cmd_launch)

    resume = sub.add_parser(
        "resume",
        help="finish an interrupted launch without duplicating a job",
        description="Reconcile a run's recorded intents with Slurm by job name, then submit what is missing.",
    )
    _run_args(resume)
    resume.add_argument("--json", action="store_true", help="print JSON for scripts")
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser(
        "status",
        help="per stage: counts by state, failures, pending reasons, time left",
        description="One batched query to Slurm for the whole run: counts by state per "
        "stage, failures with exit code, node and log, pending reasons in words, retries.",
    )
    _run_args(status)
    status.add_argument("--tasks", action="store_true", help="one row per task")
    status.add_argument("--watch", action="store_true", help="a live dashboard until the run ends")
    status.add_argument("--interval", type=cliargs.seconds, default=5.0, help="seconds between refreshes with --watch")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser(
        "cancel",
        help="cancel a run's jobs (or one stage's)",
        description="scancel every job of the run, or of one stage.",
    )
    _run_args(cancel)
    cancel.add_argument("--stage", default=None, help="only this stage")
    cancel.add_argument("--json", action="store_true", help="print JSON for scripts")
    cancel.set_defaults(func=cmd_cancel)

    retry = sub.add_parser(
        "retry",
        help="resubmit the tasks that ended without success (index runs compressed)",
        description="Resubmit a run's unsuccessful tasks as new arrays over just their indices; "
        "retried dependents wait for their retried parents.",
    )
    _run_args(retry)
    retry.add_argument("--stage", default=None, help="only this stage")
    retry.add_argument("--failed", action="store_true", help="only tasks that failed, not cancelled ones")
    retry.add_argument("--json", action="store_true", help="print JSON for scripts")
    retry.set_defaults(func=cmd_retry)

    monitor = sub.add_parser(
        "monitor",
        help="keep a run moving: requeue infrastructure failures, rewire dependents",
        description="Reconcile the run with Slurm: requeue tasks that failed for infrastructure reasons (per "
        "the stage's retry policy), revive their dependents, record every action; loop until the run ends, or "
        "one tick with --once (cron).",
    )
    _run_args(monitor)
    monitor.add_argument("--once", action="store_true", help="one tick, then exit")
    monitor.add_argument("--interval", type=cliargs.seconds, default=30.0, help="seconds between ticks (default 30)")
    monitor.add_argument("--max-interval", type=cliargs.seconds, default=300.0, help="back-off ceiling while idle")
    monitor.add_argument("--json", action="store_true", help="one JSON object per action")
    monitor.add_argument(
        "--as-job",
        action="store_true",
        help="run the monitor as a small Slurm job that resubmits itself until the run ends",
    )
    monitor.add_argument("--partition", default=None, help="partition of the --as-job monitor (default: cluster's)")
    monitor.add_argument("--reschedule", type=cliargs.seconds, default=None, help=argparse.SUPPRESS)
    monitor.set_defaults(func=cmd_monitor)

    gpu = sub.add_parser(
        "gpu",
        help="GPU utilisation of a run's tasks: sparklines, percentiles, idle share, GPU-hours",
        description="Read the samples the in-job GPU sampler wrote for each task and summarise them per "
        "task, stage and campaign: mean, median and 95th percentile utilisation, idle share, peak memory, "
        "GPU-hours used against allocated, and the idle-GPU rules that fired.",
    )
    gpu.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    gpu.add_argument("--runs-dir", default=os.environ.get(RUNS_ENV, "runs"), help="where run directories are")
    gpu.add_argument("--plot", metavar="FILE", default=None, help="also write plots: FILE.png or FILE.html")
    gpu.add_argument("--all", action="store_true", help="every task in the table (default: the first 50)")
    gpu.add_argument("--json", action="store_true", help="print JSON for scripts")
    gpu.set_defaults(func=cmd_gpu)

    logs = sub.add_parser(
        "logs",
        help="print a task's log",
        description="Print the log of a stage's job, or of one trial's task of a per-trial stage.",
    )
    logs.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    logs.add_argument("stage", metavar="STAGE")
    logs.add_argument(
        "task", metavar="TRIAL", type=cliargs.whole(0), nargs="?", help="trial index, for per-trial stages"
    )
    logs.add_argument("--runs-dir", default=os.environ.get(RUNS_ENV, "runs"), help="where run directories are")
    logs.set_defaults(func=cmd_logs)
    add_parsers(sub, make_backend)
    return parser


def _no_slurm(exc: CommandError) -> str:
    """One line for a machine without a usable Slurm, with the ways on."""
    ways = "run slurmflow on a login node of the cluster, reach one with --via 'ssh LOGIN', or use --backend local"
    if isinstance(exc, SlurmNotConfigured):
        program = next((a for a in exc.argv if a in SLURM_PROGRAMS), "Slurm")
        return f"Slurm's commands are installed here but not configured ({program}: no slurm.conf found): {ways}"
    program = exc.argv[0] if exc.argv else "?"  # the program that is missing: a Slurm command, or the prefix's
    if program in SLURM_PROGRAMS:
        return f"Slurm's commands are not installed here ({program} not found on PATH): {ways}"
    return f"{program} not found on PATH (the --via prefix or $SLURMFLOW_SLURM_PREFIX): fix it, or use --backend local"


SLURM_PROGRAMS = frozenset({"sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo", "sacctmgr", "sshare"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # With --json, stdout carries only the JSON document; progress and tables go to stderr.
    console = Console(stderr=bool(getattr(args, "json", False)))
    try:
        return int(args.func(args, console))
    except (CommandNotFound, SlurmNotConfigured) as exc:
        print(f"slurmflow: error: {_no_slurm(exc)}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"slurmflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SlurmflowError as exc:
        # One line, whatever a value quoted in the message holds (a name with a line break).
        text = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"slurmflow: error: {text}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slurmflow: interrupted", file=sys.stderr)
        return 130
