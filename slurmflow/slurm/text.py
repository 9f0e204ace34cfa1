"""Slurm's text interface: argv builders for queries and pure parsers of what Slurm prints.

Formats are pinned with explicit field lists and `|` delimiters (never the default layouts,
which change between versions). Every parser is tested against output recorded from a real
cluster (tests/fixtures/slurm/<version>/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from slurmflow.errors import (
    AccountingUnavailable,
    CommandError,
    CommandNotFound,
    CommandTimeout,
    ControllerFull,
    ControllerUnavailable,
    ParseError,
    PolicyViolation,
    SlurmError,
    SlurmNotConfigured,
    SubmissionAmbiguous,
)
from slurmflow.slurm.capabilities import SACCT_REQUIRED, SQUEUE_REQUIRED
from slurmflow.slurm.types import JobInfo, JobState

_STATES = {s.name: s for s in JobState}
# Older Slurm and sacct spell some states differently.
_STATES.update({"CANCELED": JobState.CANCELLED, "OOM": JobState.OUT_OF_MEMORY})


def parse_state(text: str) -> tuple[JobState, str | None]:
    """'CANCELLED by 1234' -> (CANCELLED, '1234'); 'COMPLETED' -> (COMPLETED, None).

    sacct appends "by <uid>" to CANCELLED and squeue may append '+' to a state: read the first token.
    """
    parts = text.strip().split()
    if not parts:
        return JobState.UNKNOWN, None
    token = parts[0].rstrip("+")
    by = parts[2] if len(parts) >= 3 and parts[1] == "by" else None
    return _STATES.get(token, JobState.UNKNOWN), by


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """'1:0' -> (1, 0); '0:15' -> (0, 15); '' -> (None, None). Never classify by this alone:
    a TIMEOUT may show 0:15 or 0:0 (SLURM_NOTES), so the state decides.

    22.05's squeue prints the raw wait status instead ('256' for exit 1, '4021' for the 0:53 of a
    launch failure): the low 7 bits are the signal, the high byte the exit code."""
    text = text.strip()
    if text.isdigit():
        status = int(text)
        return (0, status & 0x7F) if status & 0x7F else (status >> 8, 0)
    if not text or ":" not in text:
        return None, None
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig)
    except ValueError:
        return None, None


# --- array index expressions -------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def expand_indices(expr: str) -> list[int]:
    """'0-3,7,10-14:2%4' -> [0, 1, 2, 3, 7, 10, 12, 14] (a trailing %N throttle is ignored)."""
    body = expr.strip().strip("[]").split("%", 1)[0]
    out: list[int] = []
    for part in body.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ParseError("array index expression", expr)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        if hi < lo or step < 1:
            raise ParseError("array index expression", expr)
        out.extend(range(lo, hi + 1, step))
    return out


def compress_indices(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'. The --array expression is capped at 4 KiB, so runs are
    always written as ranges."""
    items = sorted(set(indices))
    if not items:
        raise ValueError("no indices to compress")
    if items[0] < 0:
        raise ValueError("array indices must be >= 0")
    runs: list[str] = []
    start = prev = items[0]
    for i in items[1:]:
        if i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    runs.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(runs)


_ARRAY_ID = re.compile(r"^(\d+)_(\[[^\]]*\]|\d+)$")


def expand_job_id(job_id: str) -> list[tuple[str, int | None]]:
    """'123_[0-2]' -> [('123', 0), ('123', 1), ('123', 2)]; '123_4' -> [('123', 4)];
    '123' -> [('123', None)]."""
    m = _ARRAY_ID.match(job_id.strip())
    if not m:
        if not job_id.strip().isdigit():
            raise ParseError("job id", job_id)
        return [(job_id.strip(), None)]
    base, idx = m.group(1), m.group(2)
    if idx.startswith("["):
        return [(base, i) for i in expand_indices(idx)]
    return [(base, int(idx))]


# --- sbatch -------------------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """`sbatch --parsable` prints '<jobid>' or '<jobid>;<cluster>'."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ParseError("sbatch --parsable output", stdout)
    return job_id


# --- squeue: the controller's view (pending, running and finished younger than MinJobAge) -------


def squeue_argv(
    job_ids: Sequence[str] = (),
    *,
    name: str | None = None,
    user: str | None = None,
    fields: Sequence[str] = SQUEUE_REQUIRED,
) -> list[str]:
    # -t all: finished jobs still in the controller (younger than MinJobAge) are reported too;
    # an array task cancelled by --kill-on-invalid-dep before it started is ONLY visible here.
    # -r: one row per array task, pending tasks included.
    fmt = ",".join(f"{f}:|" for f in fields)
    argv = ["squeue", "--noheader", "--states=all", "--array", f"--Format={fmt}"]
    if job_ids:
        argv.append("--jobs=" + ",".join(job_ids))
    if name:
        argv.append(f"--name={name}")
    if user:
        argv.append(f"--user={user}")
    return argv


def _none(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "N/A", "None", "(null)", "None assigned") else text


def _rows(stdout: str, fields: Sequence[str], what: str) -> Iterator[dict[str, str]]:
    """'|'-separated lines -> one dict per line, keyed by the requested field names."""
    for line in stdout.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < len(fields):
            raise ParseError(what, line)
        yield {f: c.strip() for f, c in zip(fields, cols, strict=False)}


def _per_task(job_id: str, **fields: Any) -> list[JobInfo]:
    """One JobInfo per task of a (possibly collapsed) job id such as '12_[0-5%2]'."""
    return [
        JobInfo(
            job_id=f"{base}_{idx}" if idx is not None else base,
            array_job_id=base if idx is not None else None,
            array_task_id=idx,
            **fields,
        )
        for base, idx in expand_job_id(job_id)
    ]


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def parse_squeue(stdout: str, fields: Sequence[str]) -> list[JobInfo]:
    """Rows of `squeue_argv(..., fields=fields)`: the fields the cluster's probe found."""
    jobs: list[JobInfo] = []
    for r in _rows(stdout, fields, "squeue output"):
        code, sig = parse_exit_code(r["Exit_Code"])
        jobs += _per_task(
            r["JobArrayID"],
            name=r["Name"],
            state=parse_state(r["State"])[0],
            raw_id=r["JobID"],
            exit_code=code,
            signal=sig,
            reason=_none(r["Reason"]),
            nodes=_none(r["NodeList"]),
            account=_none(r["Account"]),
            user=_none(r["UserName"]),
            partition=_none(r["Partition"]),
            restarts=_count(r.get("RestartCnt")),
        )
    return jobs


# --- sacct: accounting (every job, including those the controller has forgotten) ---------------


def sacct_argv(
    job_ids: Sequence[str] = (),
    *,
    name: str | None = None,
    since: str | None = None,
    fields: Sequence[str] = SACCT_REQUIRED,
) -> list[str]:
    # -X: allocations only (no 123.batch / 123.extern step rows). -P: '|'-separated, no padding.
    argv = ["sacct", "-X", "-P", "--noheader", "--format=" + ",".join(fields)]
    if job_ids:
        argv.append("--jobs=" + ",".join(job_ids))
    if name:
        argv.append(f"--name={name}")
    if since:
        argv.append(f"--starttime={since}")
    return argv


def parse_sacct(stdout: str, fields: Sequence[str]) -> list[JobInfo]:
    """Rows of `sacct_argv(..., fields=fields)`."""
    jobs: list[JobInfo] = []
    for r in _rows(stdout, fields, "sacct output"):
        job_id = r["JobID"]
        if "." in job_id:  # a step row slipped through (no -X): skip it
            continue
        state, by = parse_state(r["State"])
        code, sig = parse_exit_code(r["ExitCode"])
        jobs += _per_task(
            job_id,
            name=r["JobName"],
            state=state,
            raw_id=r["JobIDRaw"] if "[" not in job_id else None,
            exit_code=code,
            signal=sig,
            reason=_none(r["Reason"]),
            nodes=_none(r["NodeList"]),
            account=_none(r["Account"]),
            user=_none(r["User"]),
            partition=_none(r["Partition"]),
            restarts=_count(r.get("Restarts")),
            cancelled_by=by,
        )
    return jobs


def merge_views(controller: Iterable[JobInfo], accounting: Iterable[JobInfo]) -> list[JobInfo]:
    """One row per job id. The controller is fresher (a requeued job is PENDING there while
    accounting may still say FAILED); accounting fills what the controller lacks (who cancelled) and
    is the only source once the controller has forgotten a job. The restart count is the higher of
    the two: squeue's RestartCnt exists on every supported version, sacct's Restarts only since 24.11."""
    acct = {j.job_id: j for j in accounting}
    merged: dict[str, JobInfo] = {}
    for c in controller:
        a = acct.pop(c.job_id, None)
        if a is None:
            merged[c.job_id] = c
            continue
        merged[c.job_id] = JobInfo(
            job_id=c.job_id,
            name=c.name or a.name,
            state=c.state if c.state is not JobState.UNKNOWN else a.state,
            array_job_id=c.array_job_id or a.array_job_id,
            array_task_id=c.array_task_id if c.array_task_id is not None else a.array_task_id,
            raw_id=c.raw_id or a.raw_id,
            exit_code=c.exit_code if c.state.final or a.exit_code is None else a.exit_code,
            signal=c.signal if c.state.final or a.signal is None else a.signal,
            reason=c.reason or a.reason,
            nodes=c.nodes or a.nodes,
            account=c.account or a.account,
            user=c.user or a.user,
            partition=c.partition or a.partition,
            restarts=_most(c.restarts, a.restarts),
            cancelled_by=a.cancelled_by if c.state is JobState.CANCELLED else None,
        )
    merged.update(acct)
    return sorted(merged.values(), key=_sort_key)


def _most(*counts: int | None) -> int | None:
    """The highest restart count either view knows (None when neither has the field)."""
    known = [c for c in counts if c is not None]
    return max(known) if known else None


def _sort_key(j: JobInfo) -> tuple[int, int]:
    base = j.array_job_id or j.job_id
    return (int(base) if base.isdigit() else 0, -1 if j.array_task_id is None else j.array_task_id)


# --- error classification -----------------------------------------------------------------------

_UNAVAILABLE = (
    "unable to contact slurm controller",
    "connection refused",
    "slurm_load_jobs error: unable to contact",
)
_AMBIGUOUS = ("socket timed out", "zero bytes were transmitted or received")
_POLICY = ("violates accounting/qos policy", "qosmaxsubmitjob", "assocmaxsubmitjob", "job violates")
# MaxJobCount reached: sbatch says so, retries for about 120 s, then gives up. 22.05 and 24.11 say
# "temporarily unable to accept job" / "Resource temporarily unavailable"; 26.05 "Slurm job queue
# full" / "MaxJobCount limit reached" (tests/fixtures/slurm/<version>/sbatch_max_job_count.err).
_FULL = ("temporarily unable to accept job", "job queue full", "maxjobcount limit reached")
# A client with no slurm.conf and no configless controller (tests/fixtures/slurm/*/scontrol_unconfigured.err).
_UNCONFIGURED = ("could not establish a configuration source",)
_DBD = (
    "slurmdbd",
    "_open_persist_conn",
    "persistent connection",
    "dbd_get_jobs_cond",
    "problem talking to the database",
)


def classify(err: CommandError) -> CommandError:
    """Turn a failed Slurm command into the most specific error we know; others are returned as is."""
    if isinstance(err, CommandNotFound):
        return err  # the program is missing: nothing Slurm said to classify
    text = (err.stderr + "\n" + err.stdout).lower()
    prog = err.argv[0] if err.argv else ""
    cls: type[SlurmError] | None = None
    # slurmdbd's messages first: "Connection refused" from the database must not read as the controller.
    if any(s in text for s in _UNCONFIGURED):
        cls = SlurmNotConfigured
    elif any(s in text for s in _DBD) or ("sacct" in err.argv and "error" in text and "connect" in text):
        cls = AccountingUnavailable
    elif any(s in text for s in _FULL) and "sbatch" in err.argv:
        cls = ControllerFull  # sbatch was still retrying, or gave up: no job was accepted
    elif "sbatch" in err.argv and (any(s in text for s in _AMBIGUOUS) or isinstance(err, CommandTimeout)):
        # The job may exist: reconcile by name before submitting again. An sbatch killed at the
        # runner's timeout is just as unsure as one that saw "Socket timed out".
        cls = SubmissionAmbiguous
    elif isinstance(err, CommandTimeout):
        # A query or an update that ran past the runner's timeout: the daemon it asks is not answering.
        cls = AccountingUnavailable if "sacct" in err.argv else ControllerUnavailable
    elif any(s in text for s in (*_UNAVAILABLE, *_AMBIGUOUS)):
        # A query or an update that timed out: the controller is busy or restarting; ask again.
        cls = ControllerUnavailable
    elif any(s in text for s in _POLICY):
        cls = PolicyViolation
    elif prog:
        cls = SlurmError
    if cls is None:
        return err
    new = cls(err.argv, err.returncode, err.stdout, err.stderr, note=err.note)
    new.__cause__ = err
    return new
