"""The event records: every kind round-trips, lines written before the types existed still read,
and a line that cannot be read (bad type, unknown kind, newer version, torn JSON) is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from slurmflow.run.cancel import records
from slurmflow.rundir import events
from slurmflow.rundir.events import (
    KINDS,
    PIPE_BUF,
    ActionFailed,
    Asked,
    Cancelled,
    ControllerBusy,
    ControllerGone,
    Event,
    GaveUp,
    GpuIdle,
    Intent,
    LaunchComplete,
    MonitorJob,
    Pruned,
    Refused,
    Released,
    Requeued,
    RequeueFailed,
    RescheduleFailed,
    Resubmitted,
    Rewired,
    SearchDone,
    Skipped,
    Submitted,
    TickFailed,
    Told,
)
from slurmflow.rundir.state import reduce
from slurmflow.rundir.store import RunStore

T = 1796185402.5

ONE_OF_EACH: list[Event] = [
    Intent(node="train.0", t=T),
    Submitted(node="train.0", job_id="1", t=T),
    Submitted(node="train.0", job_id="2", reconciled=True, t=T),
    Skipped(node="on_failure", why="a parent already ended so it can never run", t=T),
    LaunchComplete(t=T),
    ControllerBusy(node="eval.0", retry_in=2.0, t=T),
    ControllerGone(node="train.0", slurm="Unable to contact slurm controller", t=T),
    Refused(node="train.0", why="MaxJobCount", slurm="Resource temporarily unavailable", t=T),
    Requeued(task="1_2", node="train.0", why="exit code 75 is retryable", exclude="gpu3", t=T),
    RequeueFailed(task="1_2", node="train.0", why="scontrol requeue 1_2: exit code 1", t=T),
    Rewired(task="5_2", node="eval.0", why="its parent train.0 was retried", t=T),
    Released(task="1_0", node="train.0", marker="1_0#1", why="its 2-minute hold was lifted", t=T),
    GaveUp(task="1_1", node="train.0", why="FAILED with exit code 3", t=T),
    ActionFailed(task="5_2", node="eval.0", action="rewire", why="Socket timed out", t=T),
    Resubmitted(task="11 (2 task(s))", node="train.0", indices=(0, 2), job_id="11", mem="2048M", why="OUT_OF_MEMORY"),
    Resubmitted(task="15 (1 task(s))", node="final", indices=(None,), job_id="15", why="slurmflow retry", t=T),
    MonitorJob(job_id="16", t=T),
    MonitorJob(job_id="17", reconciled=True, t=T),
    TickFailed(task="monitor job 16", node="monitor", why="RuntimeError: a bug of ours", t=T),
    RescheduleFailed(task="monitor job 16", node="monitor", why="the chain ends", t=T),
    GpuIdle(task="7_1", node="train.0", action="warn", why="GPU 0 below 10% for 30 min", t=T),
    Cancelled(nodes=("eval.0", "train.0"), job_ids=("11", "16"), by="user", t=T),
    Asked(task="trials 4-7", node="search", trials=(4, 5, 6, 7), why="asked of the study", t=T),
    Told(task="trial 4", node="search", trial=4, state="COMPLETE", values=(0.25, -1.0), why="COMPLETE", t=T),
    Told(task="trial 5", node="search", trial=5, state="FAIL", why="FAIL: a task did not complete", t=T),
    Pruned(task="21_1", node="search", trial=5, step=3, tasks=("21_1", "22_1"), why="pruned at step 3", t=T),
    SearchDone(task="search", node="search", why="12 of 12 trials asked for", t=T),
]
# Kinds born with the typed records: no line of theirs was ever written without them.
TYPED_ONLY = {Asked, Told, Pruned, SearchDone}


def test_every_kind_has_a_sample_and_round_trips() -> None:
    assert {type(e) for e in ONE_OF_EACH} == set(KINDS)
    for event in ONE_OF_EACH:
        line = events.fit_line(event)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        back = events.decode(line)
        assert back == event and type(back) is type(event)
        assert json.loads(line)["event"] == event.kind and json.loads(line)["v"] == events.VERSION
        assert events.from_mapping(events.to_dict(event)) == event


# Verbatim lines the writers produced before the event types (json.dumps, sorted keys, no "v").
OLD_LINES = """\
{"event": "intent", "node": "train.0", "t": 1796185402.7998445}
{"event": "submitted", "job_id": "1", "node": "train.0", "t": 1796185402.8011162}
{"event": "submitted", "job_id": "2", "node": "train.0", "reconciled": true, "t": 1796185417.4595244}
{"event": "skipped", "node": "on_failure", "why": "a parent already ended so it can never run"}
{"event": "launch_complete", "t": 1796185402.8038688}
{"event": "controller_busy", "node": "eval.0", "retry_in": 1.0, "t": 1796185423.3233275}
{"event": "controller_gone", "node": "train.0", "slurm": "Batch job submission failed: Unable to contact slurm controller", "t": 1796185423.583593}
{"event": "refused", "node": "train.0", "slurm": "Batch job submission failed: Resource temporarily unavailable", "t": 1796185423.187971, "why": "MaxJobCount"}
{"event": "gave_up", "node": "train.0", "t": 1796185402.8050199, "task": "1_1", "why": "FAILED with exit code 3: the program's own failure is not retried (retry.exit_codes)"}
{"event": "requeued", "exclude": null, "node": "train.0", "t": 1796185412.3662956, "task": "1_2", "why": "exit code 75 is retryable: retry 1 of 2"}
{"event": "requeue_failed", "node": "train.0", "t": 1796185412.3662956, "task": "1_2", "why": "scontrol requeue 1_2: exit code 1: Socket timed out"}
{"event": "rewired", "node": "eval.0", "t": 1796185412.3666599, "task": "5_2", "why": "its parent train.0 was retried"}
{"event": "released", "marker": "1_0#1", "node": "train.0", "t": 1796185412.1801507, "task": "1_0", "why": "Slurm requeued it (restart 1); its 2-minute hold was lifted"}
{"action": "rewire", "event": "action_failed", "node": "eval.0", "t": 1796185412.2772353, "task": "5_2", "why": "scontrol update JobId=5_2 Dependency=...: exit code 1: slurm_update error: Socket timed out on send/recv operation"}
{"event": "resubmitted", "indices": [2], "job_id": "11", "mem": "2048M", "node": "train.0", "t": 1796185402.8058686, "task": "11 (1 task(s))", "why": "OUT_OF_MEMORY"}
{"event": "resubmitted", "indices": [null], "job_id": "15", "mem": null, "node": "final", "t": 1796185402.8082197, "task": "15 (1 task(s))", "why": "slurmflow retry"}
{"event": "monitor_job", "job_id": "16", "t": 1796185402.8108132}
{"event": "monitor_job", "job_id": "11", "reconciled": true, "t": 1796185412.3890927}
{"event": "tick_failed", "node": "monitor", "t": 1796185412.3269749, "task": "monitor job", "why": "RuntimeError: a bug of ours"}
{"event": "reschedule_failed", "node": "monitor", "t": 1796185412.37845, "task": "monitor job", "why": "the next monitor job could not be submitted, so the chain ends: sbatch: exit code 1: sbatch: error: Unable to contact slurm controller"}
{"action": "warn", "event": "gpu_idle", "node": "train.0", "t": 1796185413.0, "task": "7_1", "why": "GPU 0 below 10% for 30 min"}
{"by": "user", "event": "cancelled", "job_ids": ["11", "12", "13", "15", "16"], "nodes": ["eval.0", "final", "handler", "train.0"], "t": 1796185402.8137105}
"""


def test_lines_written_before_the_types_still_read() -> None:
    decoded = [events.decode(line) for line in OLD_LINES.splitlines()]
    assert {type(e) for e in decoded} == set(KINDS) - TYPED_ONLY
    assert all(e.v == 1 for e in decoded)
    by_kind = {e.kind: e for e in decoded}
    skipped = by_kind["skipped"]
    assert isinstance(skipped, Skipped) and skipped.t is None and skipped.node == "on_failure"
    oom, retried = (e for e in decoded if isinstance(e, Resubmitted))
    assert oom.indices == (2,) and oom.out_of_memory and oom.mem == "2048M"
    assert retried.indices == (None,) and not retried.out_of_memory and retried.mem is None
    requeued = by_kind["requeued"]
    assert isinstance(requeued, Requeued) and requeued.exclude is None
    cancelled = by_kind["cancelled"]
    assert isinstance(cancelled, Cancelled) and cancelled.job_ids == ("11", "12", "13", "15", "16")
    state = reduce(decoded)
    assert state.submitted == {"train.0": "2"} and state.complete and state.monitor_jobs == ["16", "11"]


def test_a_field_a_newer_writer_added_is_ignored() -> None:
    event = events.decode(b'{"event": "submitted", "node": "a", "job_id": "7", "t": 1.0, "queue": "gpu"}')
    assert event == Submitted(node="a", job_id="7", t=1.0)


@pytest.mark.parametrize(
    "line",
    [
        b'{"event": "submitted", "node": "a", "job_id": 7, "t": 1.0}',  # job id as a number
        b'{"event": "submitted", "node": "a", "t": 1.0}',  # no job id
        b'{"event": "resubmitted", "node": "a", "task": "x", "why": "w", "job_id": "7", "indices": "2"}',
        b'{"event": "sbumitted", "node": "a", "job_id": "7"}',  # an unknown kind
        b'{"node": "a", "job_id": "7"}',  # no kind at all
        b'{"event": "submitted", "node": "a", "job_id": "7", "v": 2}',  # a version this code predates
        b'{"event": "submitted", "node": "a", "job_id": "7", "v": 0}',
        b'{"event": "subm',  # torn
        b"[1, 2]",
        b'"submitted"',
        b'{"event": "submitted", "node": "\xff", "job_id": "7"}',  # not UTF-8
    ],
)
def test_an_unreadable_line_raises(line: bytes) -> None:
    with pytest.raises(events.DecodeError):
        events.decode(line)


def test_the_log_reports_unreadable_lines_by_number_and_keeps_the_rest(tmp_path: Path) -> None:
    good = events.fit_line(Submitted(node="train.0", job_id="10", t=1.0))
    lines = [
        good,
        b'{"event": "submitted", "node": "train.1", "job_id": 11}\n',
        b'{"event": "launch_finished", "t": 2.0}\n',
        b"\n",
        b'{"event": "submitted", "node": "train.1", "job_id": "11", "v": 9}\n',
        events.fit_line(Submitted(node="report", job_id="12", t=3.0)),
        b'{"event": "gpu_idle", "task": "10_1", "no',  # a write torn by a crash, last in the file
    ]
    (tmp_path / "events.jsonl").write_bytes(b"".join(lines))
    got, bad = RunStore(tmp_path).read_events()
    assert bad == [2, 3, 5, 7]
    assert [e.kind for e in got] == ["submitted", "submitted"]
    assert RunStore(tmp_path).state().submitted == {"train.0": "10", "report": "12"}


def test_append_validates_a_mapping_and_refuses_one_it_cannot_type(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    # What the in-job wrapper passes for an idle GPU: accepted, stored typed.
    store.append({"event": "gpu_idle", "task": "7_1", "node": "train.0", "action": "warn", "why": "idle", "t": 1.0})
    with pytest.raises(events.DecodeError, match="event"):
        store.append({"event": "gpu_iddle", "task": "7_1", "node": "train.0", "action": "warn", "why": "idle"})
    with pytest.raises(events.DecodeError, match="job_id"):
        store.append({"event": "submitted", "node": "a", "job_id": 7})
    with pytest.raises(events.DecodeError, match="node"):
        store.append({"event": "gpu_idle", "task": "7_1", "action": "warn", "why": "idle"})
    got, bad = store.read_events()
    assert got == [GpuIdle(task="7_1", node="train.0", action="warn", why="idle", t=1.0)] and bad == []


def test_a_long_text_is_cut_and_a_long_structure_is_refused() -> None:
    event = ActionFailed(task="5_1", node="train.0", action="rewire", why="x" * 10_000, t=T)
    line = events.fit_line(event)
    assert len(line) <= PIPE_BUF
    back = events.decode(line)
    assert isinstance(back, ActionFailed) and back.task == "5_1" and back.why.endswith("... (10000 characters)")
    two = GpuIdle(task="t" * 3000, node="n", action="warn", why="w" * 3000, t=T)
    assert len(events.fit_line(two)) <= PIPE_BUF  # both cut, the longer first
    wide = "é" * 3000  # two bytes a character: the limit is on bytes
    assert len(events.fit_line(GaveUp(task="1", node="n", why=wide, t=T))) <= PIPE_BUF
    huge = Cancelled(nodes=tuple(f"train.{i}" for i in range(1000)), job_ids=(), t=T)
    with pytest.raises(ValueError, match="does not fit"):
        events.fit_line(huge)


def test_a_cancel_of_a_large_run_is_split_into_lines_that_fit() -> None:
    nodes = tuple(f"train.{i}" for i in range(1000))
    jobs = tuple(str(100_000 + i) for i in range(1000))
    parts = records(nodes, jobs, T)
    assert len(parts) > 1 and all(len(events.fit_line(p)) <= PIPE_BUF for p in parts)
    state = reduce(parts)
    assert state.cancelled == set(nodes) and state.cancelled_jobs == set(jobs)
    assert records(("a",), ("1",), T) == [Cancelled(nodes=("a",), job_ids=("1",), t=T)]


def test_the_module_imports_msgspec_and_the_standard_library_only() -> None:
    # Paid by every task on every compute node: no Hydra, no rich, nothing else of slurmflow.
    code = (
        "import sys; before = set(sys.modules); import slurmflow.rundir.events; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) - {"typing_extensions"} == {"msgspec", "slurmflow"}  # typing_extensions: msgspec's own
    code = "import sys, slurmflow.rundir.events; print(' '.join(sorted(m for m in sys.modules if m.startswith('slurmflow'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["slurmflow", "slurmflow._lazy", "slurmflow._version", "slurmflow.rundir", "slurmflow.rundir.events"]


def test_structs_are_frozen() -> None:
    event = Submitted(node="a", job_id="1", t=T)
    with pytest.raises(AttributeError):
        event.job_id = "2"  # type: ignore[misc]
    assert isinstance(event, msgspec.Struct) and hash(event) == hash(Submitted(node="a", job_id="1", t=T))
