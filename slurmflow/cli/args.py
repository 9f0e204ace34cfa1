"""Argument types for the command line: a bad number is argparse's one-line usage error (exit 2)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

RUNS_ENV = "SLURMFLOW_RUNS_DIR"


def runs_dir(p: argparse.ArgumentParser, *, via: bool = True) -> None:
    """--runs-dir (and --via) of every command that reads runs."""
    p.add_argument(
        "--runs-dir",
        default=os.environ.get(RUNS_ENV, "runs"),
        help=f"where run directories are (${RUNS_ENV}, or ./runs)",
    )
    if via:
        p.add_argument("--via", metavar="COMMAND", default=None, help="prefix for Slurm commands")


def whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}: give a whole number >= {low}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value
