"""The `slurmflow` command: thin commands over the library, rich output, --json for scripts."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from slurmflow import __version__
from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import CommandError, SlurmflowError
from slurmflow.runner import SubprocessRunner

PREFIX_ENV = "SLURMFLOW_SLURM_PREFIX"


def make_backend(prefix: str | None = None) -> SlurmCLI:
    """The Slurm backend. A prefix (or $SLURMFLOW_SLURM_PREFIX) runs every Slurm command through
    another program, e.g. `docker exec -i -u alice slurmflow-mini` or `ssh login1`."""
    words = shlex.split(prefix if prefix is not None else os.environ.get(PREFIX_ENV, ""))
    return SlurmCLI(SubprocessRunner(prefix=tuple(words)))


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    backend = make_backend(args.via)
    config = backend.config()
    nodes = backend.nodes()
    partitions: dict[str, dict[str, object]] = {}
    for n in nodes:
        p = partitions.setdefault(str(n["partition"]), {"default": n["default"], "nodes": [], "gpus": 0, "states": set()})
        p["nodes"].append(n["node"])  # type: ignore[attr-defined]
        p["gpus"] = int(p["gpus"]) + int(n["gpus"])  # type: ignore[call-overload]
        p["states"].add(str(n["state"]))  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps({
            "slurm_version": config.version,
            "max_array_size": config.max_array_size,
            "max_job_count": config.max_job_count,
            "min_job_age_s": config.min_job_age_s,
            "nodes": nodes,
        }, indent=2))
        return 0
    table = Table(title=f"Slurm {config.version}: MaxArraySize {config.max_array_size}, "
                  f"MaxJobCount {config.max_job_count}, MinJobAge {config.min_job_age_s} s")
    for col in ("partition", "nodes", "GPUs", "state"):
        table.add_column(col)
    for name, p in sorted(partitions.items()):
        label = name + (" (default)" if p["default"] else "")
        table.add_row(label, ",".join(p["nodes"]), str(p["gpus"]), ",".join(sorted(p["states"])))  # type: ignore[call-overload, arg-type]
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurmflow",
        description="Hydra experiments to Slurm job-array dependency graphs, submitted at once.",
    )
    parser.add_argument("--version", action="version", version=f"slurmflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cluster = sub.add_parser("cluster", help="show partitions, nodes, GPUs and the limits planning uses",
                             description="Show the cluster's partitions, nodes and GPUs, and the controller "
                             "limits slurmflow plans with (MaxArraySize, MaxJobCount, MinJobAge).")
    cluster.add_argument("--json", action="store_true", help="print JSON for scripts")
    cluster.add_argument("--via", metavar="COMMAND", default=None,
                         help=f"run Slurm commands through this prefix (default: ${PREFIX_ENV})")
    cluster.set_defaults(func=cmd_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    console = Console()
    try:
        return int(args.func(args, console))
    except CommandError as exc:
        print(f"slurmflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SlurmflowError as exc:
        print(f"slurmflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slurmflow: interrupted", file=sys.stderr)
        return 130
