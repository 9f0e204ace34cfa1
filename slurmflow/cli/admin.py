"""Quota commands: `slurmflow admin quota apply|show` for cluster admins, `slurmflow quota` for
researchers (the budget check that `launch` and `plan` run is `slurmflow.quota.budget`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import UsageError
from slurmflow.quota import file as quota
from slurmflow.slurm.accounting import Usage


def _changes_table(changes: Sequence[quota.Change]) -> Table:
    table = Table(title="limits that change")
    for col in ("account", "user", "limit", "Slurm now", "declared"):
        table.add_column(col)
    for c in changes:
        option = quota.OPTIONS[c.field][1 if c.user else 0]
        table.add_row(
            c.account,
            c.user or "-",
            f"{c.field} ({option})",
            quota.describe(c.field, c.current),
            quota.describe(c.field, c.wanted),
        )
    return table


def cmd_apply(args: argparse.Namespace, console: Console, backend: SlurmCLI) -> int:
    from slurmflow.quota import admin

    proposal = admin.propose(args.file, backend)
    if not proposal.changes or args.dry_run:
        if proposal.changes:
            console.print(_changes_table(proposal.changes))
            for a in proposal.commands:
                console.print(shlex.join(a), highlight=False, markup=False, soft_wrap=True)
        else:
            console.print("no change: Slurm already holds exactly these limits")
        if args.json:
            print(json.dumps(proposal.to_dict(), indent=2))
        return 0
    console.print(_changes_table(proposal.changes))
    admin.check_permitted(backend)
    n = len(proposal.changes)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{n} limits would change: pass --yes to apply them (--dry-run shows the commands)")
        from rich.prompt import Confirm

        if not Confirm.ask(f"apply these {n} changes with sacctmgr?", console=console):
            console.print("nothing applied")
            return 1
    admin.apply(proposal, backend)
    console.print(
        f"applied {n} changes with {len(proposal.commands)} sacctmgr commands; Slurm now holds the declared limits"
    )
    if args.json:
        print(json.dumps(proposal.to_dict(applied=True), indent=2))
    return 0


def _usage_table(title: str, rows: Sequence[Usage], fairshare: dict[tuple[str, str], str]) -> Table:
    table = Table(title=title)
    for col in (
        "account",
        "user",
        "GPUs in use / cap",
        "GPU-hours used / budget",
        "left",
        "jobs running",
        "jobs queued",
        "fair-share",
    ):
        table.add_column(col, justify="left" if col in ("account", "user") else "right")

    def cap(value: int | None) -> str:
        return "∞" if value is None else str(value)

    for u in rows:
        budget = "∞" if u.gpu_minutes_limit is None else f"{u.gpu_minutes_limit / 60:.2f}"
        left = "-" if u.gpu_hours_left is None else f"{u.gpu_hours_left:.2f} h"
        style = "bold red" if u.gpu_hours_left == 0 else None
        table.add_row(
            u.account,
            u.user or "(account)",
            f"{u.gpus_in_use} / {cap(u.gpus_limit)}",
            f"{u.gpu_minutes_used / 60:.2f} / {budget}",
            left,
            f"{u.jobs_running} / {cap(u.jobs_limit)}",
            f"{u.jobs_submitted} / {cap(u.submit_limit)}",
            fairshare.get((u.account, u.user), "-"),
            style=style,
        )
    return table


def cmd_show(args: argparse.Namespace, console: Console, backend: SlurmCLI) -> int:
    rows = [u for u in backend.usage() if u.account != "root"]
    if args.account:
        rows = [u for u in rows if u.account == args.account]
        if not rows:
            raise UsageError(f"--account {args.account}: no such account in Slurm's associations")
    if args.json:
        print(json.dumps({"associations": [u.to_dict() for u in rows]}, indent=2))
        return 0
    console.print(_usage_table("GPU limits and live usage (association manager; sshare)", rows, backend.fairshare()))
    return 0


def cmd_quota(args: argparse.Namespace, console: Console, backend: SlurmCLI) -> int:
    """A researcher's view: my accounts, their limits and mine, what I use, what remains."""
    me = backend.whoami()
    usage = backend.usage()
    accounts = sorted({u.account for u in usage if u.user == me})
    rows = [u for u in usage if u.account in accounts and u.user in ("", me)]
    if args.json:
        print(json.dumps({"user": me, "associations": [u.to_dict() for u in rows]}, indent=2))
        return 0
    if not rows:
        console.print(f"{me} has no Slurm associations: ask your admin for an account")
        return 0
    console.print(_usage_table(f"{me}: GPU limits, usage and what remains", rows, backend.fairshare()))
    return 0


Command = Callable[[argparse.Namespace, Console], int]
MakeBackend = Callable[[str | None], SlurmCLI]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], make: MakeBackend) -> None:
    """`slurmflow quota` and `slurmflow admin quota apply|show`."""

    def via(p: argparse.ArgumentParser) -> None:
        p.add_argument("--via", metavar="COMMAND", default=None, help="prefix for Slurm commands")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    q = sub.add_parser(
        "quota",
        help="my accounts' GPU limits, my usage and what remains",
        description="Your Slurm associations: GPU caps and GPU-hour budgets of each account and of you "
        "within it, what is in use now, and what remains (from the controller's association manager).",
    )
    via(q)
    q.set_defaults(func=_with_backend(cmd_quota, make))

    admin = sub.add_parser("admin", help="cluster administration (quotas)", description="Commands for cluster admins.")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND")
    aq = admin_sub.add_parser("quota", help="GPU quotas: apply a quota file, show limits and usage")
    aq_sub = aq.add_subparsers(dest="quota_command", metavar="COMMAND")
    apply = aq_sub.add_parser(
        "apply",
        help="make Slurm's association limits match a quota file",
        description="Compare a quota file (configs/quota/*.yaml) with Slurm's associations, show the "
        "difference, and apply it with sacctmgr (needs Slurm AdminLevel Operator or Administrator). "
        "Idempotent: a second apply reports no change.",
    )
    apply.add_argument("file", metavar="FILE", help="the quota file (YAML)")
    apply.add_argument("--dry-run", action="store_true", help="print the exact sacctmgr commands; apply nothing")
    apply.add_argument("--yes", action="store_true", help="apply without asking")
    via(apply)
    apply.set_defaults(func=_with_backend(cmd_apply, make))
    show = aq_sub.add_parser(
        "show",
        help="limits next to live usage, per association",
        description="GPU caps, GPU-hour budgets, job limits and what each association uses now.",
    )
    show.add_argument("--account", default=None, help="only this account")
    via(show)
    show.set_defaults(func=_with_backend(cmd_show, make))
    for parser in (admin, aq):
        parser.set_defaults(func=_help(parser))


def _help(parser: argparse.ArgumentParser) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        parser.print_help()
        return 2

    return run


def _with_backend(cmd: Callable[[argparse.Namespace, Console, SlurmCLI], int], make: MakeBackend) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        return cmd(args, console, make(args.via))

    return run


__all__ = ["add_parsers"]
