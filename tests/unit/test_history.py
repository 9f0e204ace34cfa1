"""Every attempt of a job: sacct --duplicates parsed from output recorded on 24.11, SlurmCLI's one
call, and the scheduler simulation's own records (the fake and the local engine's queue on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from slurmflow.backends import FakeSlurm, Outcome
from slurmflow.backends.local_run import STATE, LocalRun, Settings, _encode, _engine, _Queue
from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import AccountingUnavailable, ParseError
from slurmflow.slurm import history as sh
from slurmflow.slurm.runner import FunctionRunner
from slurmflow.slurm.types import Attempt, JobSpec, JobState

FIX = Path(__file__).parent.parent / "fixtures" / "slurm" / "24.11"
CD, F, RQ, PD, CA, R = (
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.REQUEUED,
    JobState.PENDING,
    JobState.CANCELLED,
    JobState.RUNNING,
)


def recorded(name: str) -> str:
    return (FIX / name).read_text()


def by_task(attempts: tuple[Attempt, ...] | list[Attempt]) -> dict[str, list[Attempt]]:
    out: dict[str, list[Attempt]] = {}
    for a in attempts:
        out.setdefault(a.job_id, []).append(a)
    return out


def test_argv_asks_for_epoch_times_and_every_record() -> None:
    argv = sh.sacct_history_argv(["11", "12"])
    assert argv[:3] == ["env", "SLURM_TIME_FORMAT=%s", "sacct"]
    assert {"-X", "--duplicates", "-P", "--noheader", "--jobs=11,12"} <= set(argv)
    assert "--format=JobID,State,Submit,Start,End,NodeList,AllocTRES,ExitCode" in argv
    with pytest.raises(ValueError, match="job ids"):
        sh.sacct_history_argv([])


def test_parse_requeued_array_task_gpu_job_and_failed_job() -> None:
    tasks = by_task(sh.parse_sacct_history(recorded("sacct_history.txt")))
    first, second = tasks["11_1"]
    assert (first.state, first.restart, second.state, second.restart) == (RQ, 0, CD, 1)
    assert first.submit == 1796410136 and first.start == 1796410137 and first.end == 1796410138
    assert second.submit == first.end  # requeued: queued again the moment the first attempt was closed
    assert second.start == 1796410286 and second.end == 1796410290 and second.node == "gpu1"
    assert [a.state for a in tasks["11_0"]] == [CD]
    assert tasks["12"][0].gpus == 1 and tasks["11_0"][0].gpus == 0 and tasks["12"][0].node == "gpu1"
    failed = tasks["13"]
    assert [(a.state, a.restart, a.exit_code, a.signal) for a in failed] == [(RQ, 0, 3, 0), (F, 1, 3, 0)]


def test_parse_orders_tasks_by_id_and_attempts_oldest_first() -> None:
    attempts = sh.parse_sacct_history(recorded("sacct_history.txt"))
    ids = [a.job_id for a in attempts]
    assert ids[:6] == ["11_0", "11_1", "11_1", "12", "13", "13"]
    assert all(a.submit is not None for a in attempts)


def test_parse_pending_and_cancelled_arrays_expand_to_tasks() -> None:
    tasks = by_task(sh.parse_sacct_history(recorded("sacct_history.txt")))
    held = [tasks[f"14_{i}"] for i in range(4)]
    assert all(len(a) == 1 and a[0].state is PD for a in held)
    assert all(
        (a[0].start, a[0].end, a[0].node, a[0].gpus, a[0].exit_code) == (None, None, None, 0, None) for a in held
    )
    cancelled = [tasks[f"15_{i}"][0] for i in range(3)]
    # Cancelled while pending: no start, but an end (when it left the queue).
    assert all(a.state is CA and a.start is None and a.end == 1796410138 for a in cancelled)
    assert "15_3" not in tasks


def test_a_stale_pending_array_record_never_doubles_a_started_task() -> None:
    out = recorded("sacct_history_throttled.txt")
    assert "21_[0-3%1]" in out and "21_0|RUNNING" in out  # as 24.11 printed it
    tasks = by_task(sh.parse_sacct_history(out))
    assert [(a.state, a.end, a.node) for a in tasks["21_0"]] == [(R, None, "gpu1")]
    assert [a.state for t in ("21_1", "21_2", "21_3") for a in tasks[t]] == [PD, PD, PD]


def test_a_requeue_long_after_the_end_closes_the_attempt_at_the_requeue() -> None:
    first, second = sh.parse_sacct_history(recorded("sacct_history_requeued_later.txt"))
    # It really ended at 1796409838; accounting says the requeue time.
    assert first.state is RQ and first.end == 1796409879 == second.submit
    assert second.state is CD and second.gpus == 1 and second.restart == 1


@pytest.mark.parametrize(
    ("text", "want"), [("1796410136", 1796410136.0), ("Unknown", None), ("None", None), ("", None)]
)
def test_epoch(text: str, want: float | None) -> None:
    assert sh.epoch(text) == want


def test_a_local_time_is_refused() -> None:
    with pytest.raises(ParseError):
        sh.epoch("2026-12-04T18:43:55")


def test_tres_gpus() -> None:
    assert sh.tres_gpus("billing=1,cpu=1,gres/gpu=1,mem=1000M,node=1") == 1
    assert sh.tres_gpus("cpu=2,gres/gpu=4,gres/gpu:a100=4") == 4
    assert sh.tres_gpus("cpu=2,gres/gpu:a100=2,gres/gpu:v100=1") == 3
    assert sh.tres_gpus("") == 0


def test_select_by_job_task_and_expression() -> None:
    attempts = sh.parse_sacct_history(recorded("sacct_history.txt"))
    assert {a.job_id for a in sh.select(attempts, ["11"])} == {"11_0", "11_1"}
    assert {a.job_id for a in sh.select(attempts, ["14_[1-2]", "12"])} == {"14_1", "14_2", "12"}
    assert [a.job_id for a in sh.select(attempts, ["11_1"])] == ["11_1", "11_1"]


def test_slurm_cli_history_is_one_sacct_call_on_base_ids() -> None:
    runner = FunctionRunner(lambda argv, _in: (0, recorded("sacct_history.txt"), ""))
    got = SlurmCLI(runner).history(["11_1", "12"])
    assert runner.calls == [tuple(sh.sacct_history_argv(["11", "12"]))]
    assert [(a.job_id, a.restart) for a in got] == [("11_1", 0), ("11_1", 1), ("12", 0)]
    assert SlurmCLI(runner).history([]) == ()


def test_slurm_cli_history_without_slurmdbd_is_accounting_unavailable() -> None:
    err = "sacct: error: Problem talking to the database: Connection refused"
    with pytest.raises(AccountingUnavailable):
        SlurmCLI(FunctionRunner(lambda argv, _in: (1, "", err))).history(["11"])


# --- the scheduler simulation -----------------------------------------------------------------


def test_fake_keeps_each_attempt_in_simulated_time() -> None:
    fake = FakeSlurm(program=lambda spec, index, restarts: Outcome(0, 2))
    a = fake.submit(JobSpec(name="a", script="true", array="0-1", gpus_per_task=1))
    fake.advance(3)
    fake.requeue([f"{a}_1"], start_now=True)
    fake.advance(3)
    got = fake.history([a])
    assert [(x.job_id, x.state, x.restart) for x in got] == [(f"{a}_0", CD, 0), (f"{a}_1", RQ, 0), (f"{a}_1", CD, 1)]
    first, second = got[1:]
    assert (first.submit, first.start, first.end, first.gpus, first.node) == (0, 0, 2, 1, "gpu1")
    assert (second.submit, second.start, second.end, second.exit_code) == (3, 3, 5, 0)


def test_fake_node_failure_and_cancel_while_pending() -> None:
    fake = FakeSlurm(program=lambda spec, index, restarts: Outcome(0, 100))
    job = fake.submit(JobSpec(name="a", script="true", requeue=True))
    waiting = fake.submit(JobSpec(name="b", script="true", partition="cpu", cpus_per_task=64))
    fake.advance(5)
    fake.stop_node("gpu1")
    fake.cancel([waiting])
    lost, again = fake.history([job])
    assert (lost.state, lost.start, lost.end, lost.node) == (JobState.NODE_FAIL, 0, 5, "gpu1")
    assert (again.state, again.submit, again.start, again.restart) == (PD, 5, None, 1)
    (cancelled,) = fake.history([waiting])
    assert (cancelled.state, cancelled.start, cancelled.end, cancelled.node) == (CA, None, 5, None)


def test_local_queue_keeps_attempts_and_reports_wall_clock(tmp_path: Path) -> None:
    run = LocalRun.create(tmp_path / "local", Settings(cpus=2))
    queue = msgspec.json.decode((run.root / STATE).read_bytes(), type=_Queue)
    engine = _engine(queue, deferred=True, exit_dir=run.root / "exits")
    job = engine.submit(JobSpec(name="a", script="true"))
    engine.now += 1.0
    task = engine.tasks[job]
    task.state, task.node, task.started = R, "localhost", engine.now
    engine.now += 2.0
    engine._end(task, CD, 0, 0)
    engine.requeue([job])
    (run.root / STATE).write_bytes(_encode(engine, queue.settings, queue.t0))
    first, second = run.history([job])
    assert first.state is RQ and second.state is PD and second.restart == 1
    assert first.start is not None and first.end is not None and first.submit is not None
    assert first.start - first.submit == pytest.approx(1.0) and first.end - first.start == pytest.approx(2.0)
    assert abs(first.submit - queue.t0) < 5  # epoch seconds, not engine time


def test_a_queue_from_before_history_still_loads(tmp_path: Path) -> None:
    run = LocalRun.create(tmp_path / "local", Settings(cpus=2))
    queue = msgspec.json.decode((run.root / STATE).read_bytes(), type=_Queue)
    engine = _engine(queue, deferred=True, exit_dir=run.root / "exits")
    job = engine.submit(JobSpec(name="a", script="true"))
    doc = json.loads(_encode(engine, queue.settings, queue.t0))
    for task in doc["tasks"]:
        for key in ("submitted", "finished", "attempts"):
            del task[key]
    (run.root / STATE).write_text(json.dumps(doc))
    (only,) = run.history([job])
    assert (only.job_id, only.state, only.submit, only.start) == (job, PD, None, None)
