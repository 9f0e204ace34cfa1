"""The `slurmflow` command: the parser of every command and the one place errors become exit
codes and one-line messages. The commands themselves are in commands.py."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from slurmflow._version import __version__
from slurmflow.cli import args as cliargs
from slurmflow.cli import commands
from slurmflow.cli import results as results_cli
from slurmflow.errors import CommandError, CommandNotFound, SlurmflowError, SlurmNotConfigured
from slurmflow.run import schedulers

PREFIX_ENV = schedulers.PREFIX_ENV
RUNS_ENV = cliargs.RUNS_ENV


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="Hydra overrides: key=value, sweeps key=a,b or key=range(0,3), +new=value",
    )
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="accepted as in Hydra: a slurmflow launch always runs every trial of the sweep",
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
    cliargs.runs_dir(p)


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
    cluster.set_defaults(func=commands.cmd_cluster)

    plan = sub.add_parser(
        "plan",
        help="show the job graph a launch would submit; submits nothing",
        description="Compose the experiment, expand the sweep and show the plan: stages, arrays "
        "and chunks, dependencies, resources, GPU-hours. Nothing is written or submitted.",
    )
    _experiment_args(plan)
    plan.add_argument("--scripts", action="store_true", help="also print each submission's sbatch line and script")
    plan.add_argument(
        "--trials",
        action="store_true",
        help="also list the trials by number (status, logs and gpu use it) with their overrides: "
        "the first 50 here, all of them with --json",
    )
    plan.set_defaults(func=commands.cmd_plan)

    launch = sub.add_parser(
        "launch",
        help="plan, record and submit a whole campaign, then exit",
        description="Plan the experiment, write the run directory (config snapshot, trials, "
        "plan, scripts, provenance) and submit every job with Slurm dependencies; then exit.",
    )
    _experiment_args(launch)
    launch.add_argument("--dry-run", action="store_true", help="the same as `slurmflow plan`")
    launch.add_argument("--hold", action="store_true", help="submit every job held; `scontrol release` starts them")
    launch.add_argument(
        "--detach",
        action="store_true",
        help="local backend: return once submitted; the run goes on in the background (Ctrl-C otherwise cancels it)",
    )
    launch.set_defaults(func=commands.cmd_launch)

    resume = sub.add_parser(
        "resume",
        help="finish an interrupted launch without duplicating a job",
        description="Reconcile a run's recorded intents with Slurm by job name, then submit what is missing.",
    )
    _run_args(resume)
    resume.add_argument("--json", action="store_true", help="print JSON for scripts")
    resume.set_defaults(func=commands.cmd_resume)

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
    status.add_argument(
        "--gantt", action="store_true", help="a timeline of every task attempt: pending, running, requeued, final state"
    )
    status.add_argument("--limit", type=cliargs.whole(1), default=40, help="rows of --gantt (default 40)")
    status.set_defaults(func=commands.cmd_status)

    cancel = sub.add_parser(
        "cancel",
        help="cancel a run's jobs (or one stage's)",
        description="scancel every job of the run, or of one stage.",
    )
    _run_args(cancel)
    cancel.add_argument("--stage", default=None, help="only this stage")
    cancel.add_argument("--json", action="store_true", help="print JSON for scripts")
    cancel.set_defaults(func=commands.cmd_cancel)

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
    retry.set_defaults(func=commands.cmd_retry)

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
    monitor.set_defaults(func=commands.cmd_monitor)

    gpu = sub.add_parser(
        "gpu",
        help="GPU utilisation of a run's tasks: sparklines, percentiles, idle share, GPU-hours",
        description="Read the samples the in-job GPU sampler wrote for each task and summarise them per "
        "task, stage and campaign: mean, median and 95th percentile utilisation, idle share, peak memory, "
        "GPU-hours used against allocated, and the idle-GPU rules that fired.",
    )
    gpu.add_argument("run", metavar="RUN", help="run id (in --runs-dir) or run directory")
    cliargs.runs_dir(gpu, via=False)
    gpu.add_argument("--plot", metavar="FILE", default=None, help="also write plots: FILE.png or FILE.html")
    gpu.add_argument("--all", action="store_true", help="every task in the table (default: the first 50)")
    gpu.add_argument("--json", action="store_true", help="print JSON for scripts")
    gpu.set_defaults(func=commands.cmd_gpu)

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
    cliargs.runs_dir(logs, via=False)
    logs.set_defaults(func=commands.cmd_logs)
    # The supervisor of a local run, started detached by the local engine; not for people.
    supervise = sub.add_parser("supervise", description="Run a local run's supervisor (started by slurmflow).")
    supervise.add_argument("run_dir", metavar="RUN_DIR")
    supervise.set_defaults(func=commands.cmd_supervise)
    add_parsers(sub, lambda via: schedulers.slurm(via))
    results_cli.add_parsers(sub)
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
