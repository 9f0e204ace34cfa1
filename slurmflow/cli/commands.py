"""The commands: each parses nothing itself (main.py does), calls one library function, renders.

Commands import Hydra (via slurmflow.run.launch) only when they compose: `status`, `gpu`, `logs`,
`cancel`, `monitor` and `retry` never pay for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from slurmflow.errors import CommandError, UsageError
from slurmflow.model import Plan, Trial
from slurmflow.run import schedulers
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm import cluster

if TYPE_CHECKING:
    from slurmflow.monitoring.monitor import Tick
    from slurmflow.quota.budget import Verdict
    from slurmflow.quota.fit import Fit
    from slurmflow.run.launch import Prepared


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore.open(args.run, Path(args.runs_dir))


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    backend = schedulers.slurm(args.via)
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
    table = Table(
        title=f"Slurm {config.version}: MaxArraySize {config.max_array_size}, "
        f"MaxJobCount {config.max_job_count}, MinJobAge {config.min_job_age_s} s"
    )
    for col in ("partition", "nodes", "GPUs", "state"):
        table.add_column(col)
    for p in cluster.partitions(nodes):
        label = p.name + (" (default)" if p.default else "")
        table.add_row(label, ",".join(p.nodes), str(p.gpus), ",".join(sorted(p.states)))
    console.print(table)
    return 0


def _prepare(args: argparse.Namespace, console: Console) -> tuple[Prepared, schedulers.Chosen]:
    """The planned campaign and the backend it goes to."""
    from slurmflow.run.launch import prepare

    chosen = schedulers.for_launch(args.backend, args.via, args.local_gpus)
    if chosen.note:
        console.print(f"[yellow]{chosen.note}[/]", highlight=False)
    prep = prepare(
        Path(args.config_dir),
        args.config_name,
        args.overrides,
        chosen.backend.cluster_info(),
        max_array_size=args.max_array_size,
        max_tasks=args.max_tasks,
    )
    return prep, chosen


def _budget(
    args: argparse.Namespace, prep: Prepared, chosen: schedulers.Chosen, console: Console, *, refuse: bool
) -> tuple[list[Fit], Prepared]:
    """GPU-hours and peak GPUs against what the accounts have left (where the scheduler keeps
    accounts): a launch that cannot fit is refused unless --force; plan only says so. A search
    whose worst case does not fit takes what is left as its GPU-hour budget instead (the
    Prepared returned carries it)."""
    import dataclasses

    from slurmflow.quota.budget import for_search, judge
    from slurmflow.run.search import trial_hours

    accounting = chosen.backend.accounting()
    if accounting is None:
        return [], prep
    verdict = judge(prep.plan, accounting, prep.cluster.user)
    found = prep.experiment.search
    if found is not None and not args.force:
        verdict, budget = for_search(verdict, prep.plan, trial_hours(prep.plan.stages)[0], found.max_gpu_hours)
        if budget != found.max_gpu_hours:
            capped = dataclasses.replace(found, max_gpu_hours=budget)
            prep = dataclasses.replace(prep, experiment=dataclasses.replace(prep.experiment, search=capped))
    say_budget(verdict, console, force=args.force, planning=not refuse)
    return verdict.fits, prep


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

    prep, chosen = _prepare(args, console)
    fits, prep = _budget(args, prep, chosen, console, refuse=False)
    if args.json:
        doc = {
            "backend": chosen.kind,
            "quota": [f.to_dict() for f in fits],
            "plan": plan_to_dict(prep.plan),
            "tasks": prep.plan.tasks(),
            "axes": {a.key: list(a.values) for a in prep.experiment.axes},
        }
        if prep.experiment.search is not None:  # the plan is its worst case: n_trials, each to its limit
            from slurmflow.search import space

            doc["search"] = space.to_json(prep.experiment.search)
        if getattr(args, "trials", False):
            doc["trials"] = [{"trial": t.index, "overrides": list(t.overrides)} for t in _trials(prep, 0)]
        print(json.dumps(doc, indent=2))
        return 0
    console.print(views.plan_tree(prep))
    if getattr(args, "trials", False):
        console.print(views.trials_table(_trials(prep, 50), prep.plan.n_trials))
    if getattr(args, "scripts", False):
        for node in prep.plan.nodes:
            console.rule(node.key)
            console.print(views.script_preview(prep, node), highlight=False, markup=False)
    return 0


def _trials(prep: Prepared, limit: int) -> list[Trial]:
    """The first `limit` trials of the sweep (0: all), expanded lazily."""
    import itertools

    from slurmflow.experiment import sweep

    trials = sweep.expand(prep.experiment.axes)
    return list(trials if limit == 0 else itertools.islice(trials, limit))


def cmd_launch(args: argparse.Namespace, console: Console) -> int:
    if args.dry_run:
        return cmd_plan(args, console)
    from slurmflow.run.launch import launch

    prep, chosen = _prepare(args, console)
    fits, prep = _budget(args, prep, chosen, console, refuse=True)
    store, ids = launch(
        prep,
        chosen,
        Path(args.runs_dir),
        via=args.via,
        cwd=Path.cwd(),
        python=sys.executable,
        argv=sys.argv,
        hold=args.hold,
    )
    code = 0
    if chosen.local is not None and not args.detach:  # the terminal follows the local run to its end
        code = _follow_local(store, ids, console)
    found = prep.experiment.search
    # A search's plan grows as trials are asked for: what is submitted now is the run's own plan.
    _report_launch(args, console, store, store.plan() if found else prep.plan, ids, fits)
    if found is not None and chosen.local is None and not args.json:
        asked = store.trial_count()
        console.print(
            f"search: {asked} of {found.n_trials} trials asked for ({found.batch} in flight at most); the monitor "
            f"asks for the rest as trials end: slurmflow monitor {store.run_id} (or --as-job, to log out)",
            highlight=False,
        )
    if chosen.local is not None and args.detach and not args.json:
        console.print(f"the run goes on in the background: slurmflow status {store.run_id}", highlight=False)
    return code


def _follow_local(store: RunStore, ids: dict[str, str], console: Console) -> int:
    from rich.progress import Progress

    from slurmflow.backends import local_run
    from slurmflow.backends.local import exit_code
    from slurmflow.backends.local_run import foreground
    from slurmflow.cli import views

    run = schedulers.local_of(store)
    searching = store.has_search()
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("searching locally" if searching else "running locally", total=None)
        try:
            jobs = foreground(
                run, list(ids.values()), lambda done, total: bar.update(task, completed=done, total=total)
            )
            while searching:  # the supervisor asks for the next trials as trials end: follow them too
                state = store.state()
                now = list(state.submitted.values())
                if state.search_done and set(now) <= {j.base_id for j in jobs}:
                    break
                if set(now) <= {j.base_id for j in jobs} and not local_run.supervisor_alive(store.local_dir):
                    break  # the supervisor has gone: `slurmflow monitor` (or resume) goes on from here
                if set(now) <= {j.base_id for j in jobs}:
                    time.sleep(0.2)  # the supervisor's next tick submits the next trials
                    continue
                jobs = foreground(run, now, lambda done, total: bar.update(task, completed=done, total=total))
        except KeyboardInterrupt:
            console.print(f"interrupted: run {store.run_id} cancelled (--detach keeps a run going)")
            return 130
    console.print(views.final_table(jobs))
    return exit_code(jobs)


def cmd_supervise(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.monitoring import supervisor

    return supervisor.run(RunStore(Path(args.run_dir)))


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.run import search
    from slurmflow.run.submission import submit_run

    store = _store(args)
    before = store.state()
    backend = schedulers.of_run(store, args.via)
    if store.has_search():  # a search: its step finishes what was begun
        search.advance(store, backend)
        ids = dict(store.state().submitted)
    else:
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
    from slurmflow.run.launch import jobs_by_stage

    by_stage = jobs_by_stage(plan, ids)
    if args.json:
        doc = {
            "run_id": store.run_id,
            "run_dir": str(store.root),
            "jobs": by_stage,
            "nodes": ids,
            "quota": [f.to_dict() for f in fits],
        }
        print(json.dumps(doc, indent=2))
        return
    console.print(views.launch_summary(store.run_id, str(store.root), plan, by_stage))


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.cli import views
    from slurmflow.monitoring.observe import campaign, watch
    from slurmflow.monitoring.status import to_dict

    store = _store(args)
    if getattr(args, "gantt", False):
        from slurmflow.cli.results import gantt

        gantt(store, args.via, console, args.limit)
        return 0
    from slurmflow.cli.results import study_of

    backend = schedulers.of_run(store, args.via)
    if args.json:
        doc = to_dict(campaign(store, backend), tasks=args.tasks)
        study = study_of(store, importances=False)
        if study is not None:
            doc["study"] = study.to_dict() if not isinstance(study, str) else {"error": study}
        print(json.dumps(doc, indent=2))
        return 0
    if not args.watch:
        st = campaign(store, backend)
        console.print(views.status_view(st, tasks=args.tasks, study=study_of(store, importances=False)))
        return 0
    from rich.live import Live

    with Live(console=console, auto_refresh=False) as live:
        for st in watch(store, backend, args.interval):
            study = study_of(store, importances=False)
            live.update(views.status_view(st, tasks=args.tasks, study=study), refresh=True)
    return 0


def cmd_gpu(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from slurmflow.cli import views
    from slurmflow.gpu.usage import collect

    store = _store(args)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("reading GPU samples", total=None)
        run = collect(store, progress=lambda n: bar.update(task, completed=n))
    if args.plot:
        from slurmflow.gpu.report import plot

        console.print(f"wrote {plot(run, Path(args.plot))}")
    if args.json:
        print(json.dumps(run.to_dict(), indent=2))
    else:
        console.print(views.gpu_view(run, limit=len(run.tasks) if args.all else 50))
    return 0


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.run.cancel import cancel

    store = _store(args)
    done = cancel(store, schedulers.of_run(store, args.via), stage=args.stage)
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
    from slurmflow.monitoring.observe import task_log, why_no_log

    store = _store(args)
    log = task_log(store, args.stage, args.task)
    if not log.path.exists():
        why = why_no_log(store, schedulers.of_run(store), log.node.key, log.index)  # the run's own prefix
        raise UsageError(f"no log at {log.path}: {why}")
    sys.stdout.write(log.path.read_text())
    return 0


def cmd_monitor(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.errors import ControllerUnavailable
    from slurmflow.monitoring import loop
    from slurmflow.rundir import events

    store = _store(args)
    backend = schedulers.of_run(store, args.via)
    if args.as_job:
        job_id = loop.submit(store, backend, interval=args.interval, partition=args.partition, delay=1)
        console.print(
            f"monitor of run {store.run_id} runs as Slurm job {job_id}, every {args.interval:g} s; you can log out"
        )
        return 0

    def show(result: Tick) -> None:
        for action in result.actions:
            if args.json:
                print(json.dumps(events.to_dict(action)), flush=True)
            else:
                console.print(f"{action.kind}: {action.task} ({action.node}): {action.why}", highlight=False)
        if not result.accounting_available:
            console.print("[yellow]slurmdbd did not answer: acting on the controller's view only[/]")
        if result.done and not args.json:
            console.print(f"run {store.run_id}: every job has ended")

    if args.reschedule is not None:
        # A link of the --as-job chain: it submits its successor whatever its tick did.
        link = loop.tick_and_reschedule(
            store, backend, interval=args.reschedule, partition=args.partition, this_job=os.environ.get("SLURM_JOB_ID")
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

    def unavailable(exc: CommandError, wait: float) -> None:
        what = "controller unavailable" if isinstance(exc, ControllerUnavailable) else "Slurm query failed"
        console.print(f"[yellow]{what}, retrying in {wait:g} s: {exc}[/]", highlight=False)

    return loop.follow(
        store,
        backend,
        interval=args.interval,
        max_interval=args.max_interval,
        once=args.once,
        show=show,
        unavailable=unavailable,
    )


def cmd_retry(args: argparse.Namespace, console: Console) -> int:
    from slurmflow.monitoring.retry import retry

    store = _store(args)
    backend = schedulers.of_run(store, args.via)
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
