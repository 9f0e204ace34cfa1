"""Every attempt of a job from Slurm's accounting: `sacct --duplicates` keeps one record per start of
a job or array task (a requeue closes the record and opens a new one under the same id), where a
plain sacct shows only the newest.

Times are asked for as epoch seconds (SLURM_TIME_FORMAT=%s): sacct otherwise prints the local time
of the machine it runs on, without its zone, and a timeline drawn across a `--via` hop or a daylight
saving change would be off by hours. sacct reads the variable from its own environment, and the
runner passes argv only (possibly through a prefix that runs it on another machine), so the argv
itself sets it with `env`.

What 24.11 records (tests/fixtures/slurm/24.11/sacct_history*.txt):
  - a requeue closes the attempt as REQUEUED with End = the requeue time, even when the job had
    ended long before: a finished job's real end is lost once it is requeued. Its exit code stays.
  - the new attempt's Submit is the requeue time; after a requeue of an ended job it carries the
    old AllocTRES while it pends.
  - a job cancelled while pending has Start "None" and End the cancel time; a pending one has
    Start and End "Unknown".
  - the record of an array's still-pending tasks (`12_[0-3%1]`) may still list a task that has
    already started under its own record: a task with a record of its own is never read from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from slurmflow.errors import ParseError
from slurmflow.slurm.text import expand_job_id, parse_exit_code, parse_state
from slurmflow.slurm.types import Attempt

# Fields of every supported version (22.05 and later): no probe needed.
HISTORY_FIELDS = ("JobID", "State", "Submit", "Start", "End", "NodeList", "AllocTRES", "ExitCode")
_NO_TIME = ("", "Unknown", "None", "N/A", "0")


def sacct_history_argv(job_ids: Sequence[str], *, fields: Sequence[str] = HISTORY_FIELDS) -> list[str]:
    """One sacct for all of these jobs (array ids list all their tasks). Without ids sacct would list
    every job of the user since midnight, so ids are required."""
    if not job_ids:
        raise ValueError("sacct history needs job ids")
    # -X: allocations only (no 123.batch step rows). -P: '|'-separated. --duplicates: every record.
    return [
        "env",
        "SLURM_TIME_FORMAT=%s",
        "sacct",
        "-X",
        "--duplicates",
        "-P",
        "--noheader",
        "--format=" + ",".join(fields),
        "--jobs=" + ",".join(job_ids),
    ]


def epoch(text: str) -> float | None:
    """'1796409835' -> 1796409835.0; 'Unknown', 'None' -> None. Anything else means the time format
    did not take: refuse it rather than read a local time as if it were UTC."""
    text = text.strip()
    if text in _NO_TIME:
        return None
    if not text.isdigit():
        raise ParseError("sacct time (SLURM_TIME_FORMAT=%s)", text)
    return float(text)


def tres_gpus(text: str) -> int:
    """'billing=1,cpu=1,gres/gpu=2,mem=1000M,node=1' -> 2. With typed GPUs Slurm lists the total
    (gres/gpu=2) beside each type (gres/gpu:a100=2): the total wins, the types are summed without it."""
    total: int | None = None
    typed = 0
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if not value.isdigit():
            continue
        if key == "gres/gpu":
            total = int(value)
        elif key.startswith("gres/gpu:"):
            typed += int(value)
    return typed if total is None else total


def parse_sacct_history(stdout: str, fields: Sequence[str] = HISTORY_FIELDS) -> list[Attempt]:
    """Rows of `sacct_history_argv(...)` -> every attempt of every task, tasks in id order, each
    task's attempts oldest first with their restart number (0, 1, ...).

    Only what an attempt really had is kept: node and GPUs once it started (a requeued job's new
    record carries the old allocation while it pends), an exit code once it ended."""
    own: dict[str, list[Attempt]] = {}  # from a task's own records
    collapsed: dict[str, list[Attempt]] = {}  # from the record of an array's pending tasks
    order: dict[str, tuple[int, int]] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < len(fields):
            raise ParseError("sacct history output", line)
        row = dict(zip(fields, cols, strict=False))
        job_id = row["JobID"]
        if "." in job_id:  # a step row (no -X)
            continue
        start, end = epoch(row["Start"]), epoch(row["End"])
        code, sig = parse_exit_code(row["ExitCode"]) if end is not None else (None, None)
        node = row["NodeList"] if start is not None and row["NodeList"] not in ("", "None assigned") else None
        into = collapsed if "[" in job_id else own
        for base, idx in expand_job_id(job_id):
            task = base if idx is None else f"{base}_{idx}"
            order[task] = (int(base), -1 if idx is None else idx)
            into.setdefault(task, []).append(
                Attempt(
                    job_id=task,
                    state=parse_state(row["State"])[0],
                    submit=epoch(row["Submit"]),
                    start=start,
                    end=end,
                    node=node,
                    gpus=tres_gpus(row["AllocTRES"]) if start is not None else 0,
                    exit_code=code,
                    signal=sig,
                )
            )
    out: list[Attempt] = []
    for task in sorted(order, key=order.__getitem__):
        out += numbered(own.get(task) or collapsed[task])
    return out


def numbered(attempts: Iterable[Attempt]) -> list[Attempt]:
    """One task's attempts oldest first (by submit time; sacct's own order, which is the order the
    records were made, breaks ties), numbered 0, 1, ..."""
    ranked = sorted(attempts, key=lambda a: float("inf") if a.submit is None else a.submit)
    return [dataclasses.replace(a, restart=i) for i, a in enumerate(ranked)]


def select(attempts: Iterable[Attempt], job_ids: Sequence[str]) -> tuple[Attempt, ...]:
    """The attempts of these ids: a plain or array job id takes all its tasks, '12_3' that task,
    '12_[0-3]' those tasks."""
    bases: set[str] = set()
    tasks: set[str] = set()
    for job_id in job_ids:
        if "[" in job_id:
            tasks.update(f"{b}_{i}" for b, i in expand_job_id(job_id))
        elif "_" in job_id:
            tasks.add(job_id)
        else:
            bases.add(job_id)
    return tuple(a for a in attempts if a.job_id in tasks or a.base_id in bases)
