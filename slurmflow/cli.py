"""The `slurmflow` command: thin commands over the library, rich output, --json for scripts."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurmflow",
        description="Hydra experiments to Slurm job-array dependency graphs, submitted at once.",
    )
    parser.add_argument("--version", action="version", version=f"slurmflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
