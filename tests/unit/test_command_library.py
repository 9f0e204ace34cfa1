"""The decisions the commands delegate: which backend, the monitor loop's back-off, the status
refreshes, where a task's log is, and the exit status of a foreground local launch."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from slurmflow.backends import FakeSlurm
from slurmflow.backends.local import exit_code
from slurmflow.backends.local_run import LocalRun, Settings
from slurmflow.errors import ControllerUnavailable, UsageError
from slurmflow.monitoring import loop, observe
from slurmflow.monitoring.monitor import Tick
from slurmflow.run import schedulers
from slurmflow.rundir.events import Requeued, Submitted
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm.types import JobInfo, JobSpec, JobState
from tests.unit.test_status import PLAN


def test_auto_is_slurm_where_sbatch_or_a_prefix_is_and_local_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(schedulers.PREFIX_ENV, raising=False)
    assert schedulers.kind("auto", None, which=lambda _p: None) == "local"
    assert schedulers.kind("auto", None, which=lambda p: f"/usr/bin/{p}") == "slurm"
    assert schedulers.kind("auto", "ssh login1", which=lambda _p: None) == "slurm"
    assert schedulers.kind("local", "ssh login1", which=lambda p: p) == "local"
    monkeypatch.setenv(schedulers.PREFIX_ENV, "docker exec -i c")
    assert schedulers.kind("auto", None, which=lambda _p: None) == "slurm"


def test_the_local_engine_gets_the_gpus_cuda_may_use_or_cpu_slots_with_a_note() -> None:
    none = schedulers.for_launch("local", None, None, gpus=lambda: ())
    assert none.local is not None and none.local.gpus == schedulers.CPU_GPU_SLOTS and "no GPU" in str(none.note)
    two = schedulers.for_launch("local", None, None, gpus=lambda: ("3", "5"))
    assert two.local is not None and two.local.devices == ("3", "5") and two.note is None and two.kind == "local"
    asked = schedulers.for_launch("local", None, 1, gpus=lambda: ("3", "5"))
    assert asked.local is not None and asked.local.devices == ("3",)
    more = schedulers.for_launch("local", None, 2, gpus=lambda: ())  # slots the user asked for, on the CPU
    assert more.local is not None and more.local.devices == ("0", "1")


def test_a_local_run_is_driven_through_its_engine_and_a_slurm_run_through_its_prefix(tmp_path: Path) -> None:
    (tmp_path / "backend.json").write_text(json.dumps({"backend": "local", "via": None}))
    with pytest.raises(UsageError, match="ran on the local backend in its launch's process"):
        schedulers.of_run(RunStore(tmp_path))
    LocalRun.create(tmp_path / "local", Settings(devices=("0",), cpus=2))
    local = schedulers.of_run(RunStore(tmp_path))
    assert isinstance(local, LocalRun) and local.cluster_info().partition_gpus == {"*": 1}
    (tmp_path / "backend.json").write_text(json.dumps({"backend": "slurm", "via": "ssh login1"}))
    backend = schedulers.of_run(RunStore(tmp_path))
    assert backend.runner.prefix == ("ssh", "login1")  # type: ignore[attr-defined]
    assert schedulers.of_run(RunStore(tmp_path), via="").runner.prefix == ()  # type: ignore[attr-defined]


ACTION = Requeued(task="1_0", node="a", why="NODE_FAIL", t=0.0)


def _follow(ticks: list[Tick | Exception], **kw: object) -> tuple[int, list[float], list[str]]:
    waits: list[float] = []
    said: list[str] = []

    def step(*_a: object, **_k: object) -> Tick:
        item = ticks.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    code = loop.follow(
        RunStore(Path("/nonexistent")),
        FakeSlurm(),
        interval=10,
        max_interval=30,
        step=step,
        sleep=waits.append,
        show=lambda t: said.append(f"tick {len(t.actions)}"),
        unavailable=lambda e, w: said.append(f"unavailable, {w:g} s"),
        **kw,  # type: ignore[arg-type]
    )
    return code, waits, said


def test_the_monitor_loop_backs_off_while_quiet_and_comes_back_on_actions() -> None:
    quiet = Tick((), False, True)
    busy = Tick((ACTION,), False, True)
    done = Tick((), True, True)
    code, waits, said = _follow([quiet, quiet, quiet, quiet, busy, ControllerUnavailable(["squeue"], 1, "", "x"), done])
    assert code == 0
    assert waits == [15, 22.5, 30, 30, 10, 10]  # x1.5 up to max_interval; back to interval after an action
    assert said[-2:] == ["unavailable, 10 s", "tick 0"]


def test_monitor_once_ticks_once_and_fails_when_slurm_does_not_answer() -> None:
    assert _follow([Tick((), False, True)], once=True)[:2] == (0, [])
    code, waits, said = _follow([ControllerUnavailable(["squeue"], 1, "", "x")], once=True)
    assert (code, waits, said) == (1, [], ["unavailable, 10 s"])


def _run(tmp_path: Path) -> RunStore:
    (tmp_path / "plan.json").write_text(json.dumps(plan_to_dict(PLAN)))
    return RunStore(tmp_path)


def test_status_watch_refreshes_until_done_and_doubles_while_nothing_changes(tmp_path: Path) -> None:
    store = _run(tmp_path)
    fake = FakeSlurm()
    for node in PLAN.nodes:  # every job held: nothing changes until released
        job_id = fake.submit(JobSpec(name=node.key, script="true", array=node.array_expr(), extra_args=("--hold",)))
        store.append(Submitted(node=node.key, job_id=job_id, t=1.0))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:  # released: the jobs start (a change), then end
            fake.release(list(store.state().submitted.values()))
            seconds = 0
        fake.advance(seconds)

    seen = [st.done for st in itertools.islice(observe.watch(store, fake, 2, sleep=sleep, clock=lambda: 5.0), 100)]
    # the wait doubles while nothing changes, up to the cap; a change brings it back; done ends it
    assert waits[:8] == [2, 4, 8, 16, 32, 60, 60, 2] and seen[-1] is True and not any(seen[:-1])


def test_task_log_finds_the_file_of_a_trial_and_refuses_what_does_not_exist(tmp_path: Path) -> None:
    store = _run(tmp_path)
    # PLAN: train.0 holds trials 0-2, train.1 trials 3-4, report one job
    log = observe.task_log(store, "train", 4)
    assert (log.node.key, log.index, log.path) == ("train.1", 1, tmp_path / "logs" / "train.1" / "1.out")
    assert observe.task_log(store, "report", None).path == tmp_path / "logs" / "report" / "job.out"
    with pytest.raises(UsageError, match=r"no such stage in run .* \(stages: train, report\)"):
        observe.task_log(store, "eval", 0)
    with pytest.raises(UsageError, match=r"give the trial index \(0-4\)"):
        observe.task_log(store, "train", None)
    with pytest.raises(UsageError, match=r"trial 5: out of range 0-4"):
        observe.task_log(store, "train", 5)
    assert observe.why_no_log(store, FakeSlurm(), "train.1", 1) == "the task has not been submitted"


def test_a_foreground_local_launch_fails_when_a_task_failed_or_ran_out_of_time_or_memory() -> None:
    def ended(state: JobState) -> JobInfo:
        return JobInfo("1", "a", state)

    assert exit_code([ended(JobState.COMPLETED), ended(JobState.CANCELLED)]) == 0
    assert exit_code([ended(JobState.COMPLETED), ended(JobState.FAILED)]) == 1
    assert exit_code([ended(JobState.TIMEOUT)]) == 1
    assert exit_code([ended(JobState.OUT_OF_MEMORY)]) == 1
