"""The records of a run's event log (events.jsonl): one frozen type per kind, one JSON line each.

The JSON is what the log has always held: an object whose `event` key names the kind, with the
kind's fields beside it, plus `t` (seconds since the epoch) and `v` (the schema version, 1 where
a line predates it). Reading is strict about what it knows and lenient about what it does not:

- a field a newer writer added is ignored, so an added field needs no new version;
- a kind this code does not know, a field of the wrong type, a missing required field, torn JSON,
  or a `v` above VERSION (a change older readers must not misread) make the line unreadable:
  `decode` raises DecodeError, and the log's reader reports the line by number.

This module is imported by every task on every compute node: msgspec and the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, get_args

import msgspec

VERSION = 1  # bump only for a change an older reader would misread; adding a field is not one
PIPE_BUF = 4096  # POSIX's least PIPE_BUF; Linux's too: a write that size is never interleaved
CUT = 200  # long text (a command's output in a `why`) is cut to this many characters to fit a line

DecodeError = msgspec.DecodeError  # what `decode` and `from_mapping` raise (ValidationError included)


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    t: float | None = None  # when, in seconds since the epoch (None: a `skipped` line written without one)
    v: int = VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.v <= VERSION:
            raise ValueError(f"schema version {self.v}: this slurmflow reads versions 1 to {VERSION}")

    @property
    def kind(self) -> str:
        """The kind's name, as the `event` key of its line holds it."""
        return str(self.__struct_config__.tag)


class TaskEvent(EventBase, frozen=True, kw_only=True):
    """What the monitor (or a task's idle-GPU rule) did to a task, and why: what `status` lists."""

    task: str  # Slurm's id of the task (123_4, 123), or a few words where it names no one task
    node: str  # the plan node's key ("monitor" for the monitor job's own events)
    why: str


# --- submission (run/submitter.py) --------------------------------------------------------------


class Intent(EventBase, frozen=True, kw_only=True, tag="intent"):
    """Written (and fsync'd) before a node's sbatch: without a `submitted` after it, resume looks
    the job up by name before it submits the node again."""

    node: str


class Submitted(EventBase, frozen=True, kw_only=True, tag="submitted"):
    node: str
    job_id: str
    reconciled: bool = False  # found in Slurm by its name after an ambiguous sbatch, not its answer


class Skipped(EventBase, frozen=True, kw_only=True, tag="skipped"):
    node: str
    why: str


class LaunchComplete(EventBase, frozen=True, kw_only=True, tag="launch_complete"):
    pass


class ControllerBusy(EventBase, frozen=True, kw_only=True, tag="controller_busy"):
    node: str
    retry_in: float  # seconds until the sbatch is tried again


class ControllerGone(EventBase, frozen=True, kw_only=True, tag="controller_gone"):
    node: str
    slurm: str  # Slurm's last line


class Refused(EventBase, frozen=True, kw_only=True, tag="refused"):
    node: str
    why: str  # MaxJobCount, submit limit
    slurm: str


# --- monitor actions (monitoring/monitor.py, rewire.py) -----------------------------------------


class Requeued(TaskEvent, frozen=True, kw_only=True, tag="requeued"):
    exclude: str | None = None  # the Slurm node the task may not run on again


class RequeueFailed(TaskEvent, frozen=True, kw_only=True, tag="requeue_failed"):
    pass


class Rewired(TaskEvent, frozen=True, kw_only=True, tag="rewired"):
    pass


class Released(TaskEvent, frozen=True, kw_only=True, tag="released"):
    marker: str  # "task#restart": Slurm's hold after its own requeue is lifted once per restart


class GaveUp(TaskEvent, frozen=True, kw_only=True, tag="gave_up"):
    pass


class ActionFailed(TaskEvent, frozen=True, kw_only=True, tag="action_failed"):
    action: str  # rewire, release, exclude_node, resubmit: tried again on a later tick


class Resubmitted(TaskEvent, frozen=True, kw_only=True, tag="resubmitted"):
    """Tasks of a node submitted again as a new job (`slurmflow retry`, out of memory, preempted)."""

    indices: tuple[int | None, ...]  # the node's array indices (None: a single job)
    job_id: str
    mem: str | None = None  # the new job's memory request

    @property
    def out_of_memory(self) -> bool:
        return "OUT_OF_MEMORY" in self.why

    @property
    def preempted(self) -> bool:
        return self.why.startswith("PREEMPTED")


# --- the monitor job's chain (monitoring/loop.py) -----------------------------------------------


class MonitorJob(EventBase, frozen=True, kw_only=True, tag="monitor_job"):
    job_id: str
    reconciled: bool = False


class TickFailed(TaskEvent, frozen=True, kw_only=True, tag="tick_failed"):
    pass


class RescheduleFailed(TaskEvent, frozen=True, kw_only=True, tag="reschedule_failed"):
    pass


# --- a `search:` study (run/search.py): the study itself is in Optuna's storage ------------------


class Asked(TaskEvent, frozen=True, kw_only=True, tag="search_asked"):
    """Trials the study proposed, written to the manifest and planned as one array node."""

    trials: tuple[int, ...]  # the run's trial numbers (Optuna's trial numbers are in the manifest)


class Told(TaskEvent, frozen=True, kw_only=True, tag="search_told"):
    """A trial's outcome given to the study: COMPLETE with its objective values, FAIL or PRUNED."""

    trial: int
    state: str
    values: tuple[float, ...] = ()


class Pruned(TaskEvent, frozen=True, kw_only=True, tag="pruned"):
    """The pruner stopped a trial at `step`: its tasks are cancelled (not failed: no retry, no
    failure handler) and shown PRUNED. Written before the cancel, which later ticks repeat until
    Slurm shows the tasks ended."""

    trial: int
    step: int
    tasks: tuple[str, ...]  # the Slurm ids of the trial's tasks when it was pruned


class SearchDone(TaskEvent, frozen=True, kw_only=True, tag="search_done"):
    """No trial will be asked for again (n_trials reached, the budget or the deadline): the
    stages that wait for every trial are planned now."""


# --- compute nodes and the user -----------------------------------------------------------------


class GpuIdle(TaskEvent, frozen=True, kw_only=True, tag="gpu_idle"):
    """A task's idle-GPU rule fired (written by the task itself, on its compute node)."""

    action: str  # warn, cancel


class Cancelled(EventBase, frozen=True, kw_only=True, tag="cancelled"):
    nodes: tuple[str, ...]  # the nodes the cancel covered
    job_ids: tuple[str, ...]  # the live jobs scancel was given
    by: str = "user"


Event: TypeAlias = (
    Intent
    | Submitted
    | Skipped
    | LaunchComplete
    | ControllerBusy
    | ControllerGone
    | Refused
    | Requeued
    | RequeueFailed
    | Rewired
    | Released
    | GaveUp
    | ActionFailed
    | Resubmitted
    | MonitorJob
    | TickFailed
    | RescheduleFailed
    | GpuIdle
    | Cancelled
    | Asked
    | Told
    | Pruned
    | SearchDone
)
KINDS: tuple[type[EventBase], ...] = get_args(Event)
# The kinds that say what was done to a task and why (every TaskEvent).
Action: TypeAlias = (
    Requeued
    | RequeueFailed
    | Rewired
    | Released
    | GaveUp
    | ActionFailed
    | Resubmitted
    | TickFailed
    | RescheduleFailed
    | GpuIdle
    | Asked
    | Told
    | Pruned
    | SearchDone
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """The event as compact JSON, no newline."""
    return _encoder.encode(event)


def decode(line: bytes | str) -> Event:
    """One line of the log; DecodeError if it is unreadable (see the module docstring)."""
    return _decoder.decode(line)


def from_mapping(doc: Mapping[str, Any]) -> Event:
    """A plain dict with an `event` key, validated exactly as a line of the log is: DecodeError
    for an unknown kind or a field of the wrong type."""
    event: Event = msgspec.convert(dict(doc), Event)
    return event


def to_dict(event: Event) -> dict[str, Any]:
    """The event as its line's JSON object (for `--json` output)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


def fit_line(event: Event) -> bytes:
    """The event as one JSON line of at most PIPE_BUF bytes, newline included: long text is cut,
    marked with its full length, longest first, before anything structural would be. ValueError
    when even that does not fit (a structure, not text, is too long)."""
    line = _encoder.encode(event) + b"\n"
    if len(line) <= PIPE_BUF:
        return line
    texts = [(name, getattr(event, name)) for name in event.__struct_fields__]
    cut = event
    for name, value in sorted(texts, key=lambda kv: -len(kv[1]) if isinstance(kv[1], str) else 0):
        if not isinstance(value, str) or len(value) <= CUT:
            break
        cut = msgspec.structs.replace(cut, **{name: value[:CUT] + f"... ({len(value)} characters)"})
        line = _encoder.encode(cut) + b"\n"
        if len(line) <= PIPE_BUF:
            return line
    raise ValueError(f"event {event.kind!r} does not fit one {PIPE_BUF}-byte line")
