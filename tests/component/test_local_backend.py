"""The local backend runs real processes with Slurm's semantics: GPU slots, throttles, dependencies."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from slurmflow.backends.local import LocalSlurm, visible_gpus
from slurmflow.slurm.types import Dependency, DepKind, JobSpec, JobState
from tests.component.processes import alive


def run_all(backend: LocalSlurm, ids: list[str], timeout: float = 30) -> dict[str, JobState]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backend.advance()
        jobs = backend.query(ids).jobs
        if all(j.state.final for j in jobs):
            return {j.job_id: j.state for j in jobs}
        time.sleep(0.05)
    raise AssertionError("local jobs did not finish")


def test_gpu_slots_are_exclusive_and_throttle_holds(tmp_path: Path) -> None:
    backend = LocalSlurm(gpus=2, cpus=8)
    # Each task records its GPU, and how many tasks were running when it started.
    script = (
        f'd={tmp_path}; touch "$d/run.$SLURM_ARRAY_TASK_ID"; ls "$d" | grep -c "^run\\." > "$d/seen.$SLURM_ARRAY_TASK_ID"; '
        f'echo "$CUDA_VISIBLE_DEVICES" > "$d/gpu.$SLURM_ARRAY_TASK_ID"; sleep 0.3; rm "$d/run.$SLURM_ARRAY_TASK_ID"'
    )
    gpu_job = backend.submit(
        JobSpec(name="gpu", script=script, gpus_per_task=1, array="0-5", output=str(tmp_path / "o-%a"))
    )
    after = backend.submit(
        JobSpec(
            name="after",
            script="exit 3",
            dependency=Dependency.on(DepKind.AFTER_OK, gpu_job),
            output=str(tmp_path / "after.out"),
        )
    )
    handler = backend.submit(
        JobSpec(
            name="h",
            script="true",
            dependency=Dependency.on(DepKind.AFTER_NOT_OK, after),
            output=str(tmp_path / "h.out"),
        )
    )
    states = run_all(backend, [gpu_job, after, handler])
    assert [states[f"{gpu_job}_{i}"] for i in range(6)] == [JobState.COMPLETED] * 6
    assert states[after] is JobState.FAILED and states[handler] is JobState.COMPLETED
    gpus = [(tmp_path / f"gpu.{i}").read_text().strip() for i in range(6)]
    assert set(gpus) == {"0", "1"}  # one slot each, never both
    assert max(int((tmp_path / f"seen.{i}").read_text()) for i in range(6)) <= 2  # never more than 2 GPUs busy

    throttled = backend.submit(
        JobSpec(name="t", script=script.replace("gpu.", "tgpu."), array="0-5%1", output=str(tmp_path / "t-%a"))
    )
    run_all(backend, [throttled])
    assert max(int((tmp_path / f"seen.{i}").read_text()) for i in range(6)) == 1  # %1: one at a time


def test_cancel_kills_the_process(tmp_path: Path) -> None:
    backend = LocalSlurm(gpus=0, cpus=2)
    pidfile = tmp_path / "pid"
    spec = JobSpec(name="long", script=f"sleep 300 & echo $! > {pidfile}; wait", output=str(tmp_path / "out"))
    job = backend.submit(spec)
    backend.advance()
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the job never started its command"
        time.sleep(0.05)
    sleeper = int(pidfile.read_text())
    assert alive(sleeper) and backend.query([job]).jobs[0].state is JobState.RUNNING
    backend.cancel([job])
    assert backend.query([job]).jobs[0].state is JobState.CANCELLED
    # The job's whole process group is killed, its children included: the sleep is gone.
    deadline = time.monotonic() + 10
    while alive(sleeper):
        assert time.monotonic() < deadline, "cancel left the job's process running"
        time.sleep(0.05)


def test_a_task_past_its_time_limit_ends_timeout_with_its_whole_process_group(tmp_path: Path) -> None:
    """As Slurm ends it: SIGTERM to every process of the task, SIGKILL after kill_wait, TIMEOUT 0:15;
    an afternotok handler then runs. (A 2-second limit once ran 15 s and ended COMPLETED.)"""
    backend = LocalSlurm(gpus=0, cpus=2, kill_wait=2.0)  # the 300 s sleep outlasts run_all's 60 s
    pid_file = tmp_path / "grandchild.pid"
    slow = backend.submit(
        JobSpec(
            name="slow",
            script=f"sleep 300 & echo $! > {pid_file}; wait",
            time="0:02",  # M:S
            output=str(tmp_path / "slow.out"),
        )
    )
    handler = backend.submit(
        JobSpec(
            name="on_fail",
            script=f"touch {tmp_path / 'handled'}",
            dependency=Dependency.on(DepKind.AFTER_NOT_OK, slow),
            output=str(tmp_path / "h.out"),
        )
    )
    states = run_all(backend, [slow, handler], timeout=60)
    assert states == {slow: JobState.TIMEOUT, handler: JobState.COMPLETED}
    info = backend.query([slow]).by_id()[slow]
    assert (info.exit_code, info.signal, info.reason) == (0, 15, "TimeLimit")
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild), "the task's background process outlived its time limit"


def test_a_task_over_its_memory_ends_out_of_memory_and_its_handler_runs(tmp_path: Path) -> None:
    """Its process group's resident memory over `mem`: SIGKILL, OUT_OF_MEMORY, as Slurm's
    OverMemoryKill ends it. A task within its memory completes."""
    backend = LocalSlurm(gpus=0, cpus=2, mem_every_s=0.1)
    hog = "import time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(60)"
    over = backend.submit(
        JobSpec(name="hog", script=f"{sys.executable} -c {shlex.quote(hog)}", mem="100M", output=str(tmp_path / "o"))
    )
    within = backend.submit(JobSpec(name="ok", script="true", mem="100M", output=str(tmp_path / "w")))
    handler = backend.submit(
        JobSpec(
            name="on_fail",
            script="true",
            dependency=Dependency.on(DepKind.AFTER_NOT_OK, over),
            output=str(tmp_path / "h"),
        )
    )
    states = run_all(backend, [over, within, handler], timeout=60)
    assert states == {over: JobState.OUT_OF_MEMORY, within: JobState.COMPLETED, handler: JobState.COMPLETED}
    assert backend.query([over]).by_id()[over].reason == "OutOfMemory"


def test_gpu_slots_name_the_devices_cuda_may_use(tmp_path: Path) -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}, count=lambda: 8) == ("2", "5")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=lambda: 8) == ()
    assert visible_gpus({}, count=lambda: 2) == ("0", "1")
    backend = LocalSlurm(devices=("GPU-aa", "GPU-bb"), cpus=2)
    assert backend.gpus == 2 and backend.cluster_info().partition_gpus == {"*": 2}
    job = backend.submit(
        JobSpec(name="g", script="echo $CUDA_VISIBLE_DEVICES", gpus_per_task=2, output=str(tmp_path / "g"))
    )
    assert run_all(backend, [job]) == {job: JobState.COMPLETED}
    assert (tmp_path / "g").read_text().strip() == "GPU-aa,GPU-bb"


def test_a_job_submitted_while_the_supervisor_leaves_is_not_left_pending(tmp_path: Path) -> None:
    """The supervisor leaves once its run is idle. A command that changes the queue in that moment
    either is seen by it (it stays) or finds it gone (and starts a new one): never neither."""
    from slurmflow.backends.local_run import LocalRun, Settings, supervise

    run = LocalRun.create(tmp_path / "local", Settings(cpus=2), python=sys.executable)
    run.supervisor = ["false"]  # a second supervisor would be a failure of this test, not a rescue
    submitted: list[str] = []
    steps = 0

    def on_step() -> bool:  # between the step that found the run idle and the decision to leave
        nonlocal steps
        steps += 1
        if steps == 2 and not submitted:
            submitted.append(run.submit(JobSpec(name="late", script="true", output=str(tmp_path / "o"))))
        return False

    assert supervise(tmp_path / "local", on_step=on_step, linger_s=0, step_s=0.01) == 0
    assert submitted and run.query(submitted).jobs[0].state is JobState.COMPLETED
