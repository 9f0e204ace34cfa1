"""Controller faults in the middle of a campaign: slurmdbd stopped, slurmctld restarted."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, count_jobs_by_name, launch_json, slurmflow, wait_final, workdir
from tests.integration.test_monitor import FLAKY

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch


def daemon(container: str, action: str, name: str) -> None:
    subprocess.run(["docker", "exec", container, "cluster-daemon", action, name], check=True, timeout=120)


def test_status_without_slurmdbd_degrades_and_marks_nothing_failed(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(mini_cluster, workdir, "experiment=flaky", "fail_code=0", "sleep=3")
    run_id = str(doc["run_id"])
    daemon(mini_cluster, "stop", "slurmdbd")
    try:
        done = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json")
        assert done.returncode == 0, done.stderr
        st = json.loads(done.stdout)
        assert st["accounting_available"] is False and "slurmdbd did not answer" in st["notes"][0]
        for stage in st["stages"]:
            assert not stage["failures"], stage  # nothing is marked failed for want of accounting
            assert sum(stage["counts"].values()) == stage["tasks"]
        text = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs").stdout
        assert "slurmdbd did not answer" in text
        tick = slurmflow(mini_cluster, workdir, "monitor", run_id, "--runs-dir", "runs", "--once", "--json")
        assert tick.returncode == 0 and not tick.stdout.strip()  # and the monitor takes no action on it
    finally:
        daemon(mini_cluster, "start", "slurmdbd")
    jobs = wait_final(mini_cluster, list(doc["nodes"].values()))
    assert sum(j.state is JobState.COMPLETED for j in jobs.values()) == 9  # 4 train, 4 eval, final


def test_controller_restart_mid_campaign_loses_nothing_and_submits_nothing_twice(
    mini_cluster: str, workdir: Path
) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(mini_cluster, workdir, "experiment=flaky", "fail_code=0", "sleep=8")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    # The monitor loop runs through the restart (it retries while the controller is away).
    monitor = subprocess.Popen(
        [
            "docker",
            "exec",
            "-u",
            "alice",
            "-w",
            str(workdir),
            mini_cluster,
            "slurmflow",
            "monitor",
            run_id,
            "--runs-dir",
            "runs",
            "--interval",
            "2",
            "--max-interval",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(monitor.stdout or []), daemon=True)
    reader.start()
    # Stop the controller once tasks run, and start it again once the monitor has met its absence
    # (observed, not timed: on a loaded machine either may take a while).
    first = f"{nodes['train.0']}_0"
    _wait_for("a task running", lambda: _state(mini_cluster, first) is JobState.RUNNING, 120)
    daemon(mini_cluster, "stop", "slurmctld")
    try:
        _wait_for("the monitor meeting the absent controller", lambda: "controller unavailable" in "".join(output), 120)
    finally:
        daemon(mini_cluster, "start", "slurmctld")
    try:
        monitor.wait(timeout=240)
    finally:
        monitor.kill()
    reader.join(5)
    text = "".join(output)
    assert monitor.returncode == 0, text
    assert "controller unavailable" in text and "every job has ended" in text
    jobs = wait_final(mini_cluster, list(nodes.values()))
    assert sum(j.state is JobState.COMPLETED for j in jobs.values()) == 9, jobs
    counts = count_jobs_by_name(mini_cluster, run_id)
    assert set(counts.values()) == {1} and len(counts) == 4  # each submission exactly once
    events = [json.loads(line) for line in (Path(str(doc["run_dir"])) / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] in ("requeued", "gave_up")]  # no false failures


PAUSE_AFTER = """#!/bin/bash
# Runs a Slurm command; after the Nth sbatch, stops until the test says go (the test stops
# slurmctld meanwhile), so the next sbatch meets an absent controller.
dir=$1 n=$2; shift 2
"$@"; rc=$?
if [ "$1" = sbatch ] && [ "$2" = --parsable ]; then  # a submission, not the probe's sbatch --help
  c=$(( $(cat "$dir/count" 2>/dev/null || echo 0) + 1 )); echo $c > "$dir/count"
  if [ "$c" -eq "$n" ]; then
    touch "$dir/paused"
    while [ ! -f "$dir/go" ]; do sleep 0.2; done
  fi
fi
exit $rc
"""


def _state(container: str, job: str) -> JobState | None:
    info = backend(container).query([job]).by_id().get(job)
    return info.state if info else None


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.5)


def test_controller_stopped_mid_launch_is_waited_for_and_nothing_is_submitted_twice(
    mini_cluster: str, workdir: Path
) -> None:
    wrapper = workdir / "pause-after.sh"
    wrapper.write_text(PAUSE_AFTER)
    wrapper.chmod(0o755)
    launch = subprocess.Popen(
        [
            "docker", "exec", "-u", "alice", "-w", str(workdir), mini_cluster, "slurmflow", "launch",
            "--runs-dir", "runs", "--json", "seed=range(2)", "--via", f"{wrapper} {workdir} 2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for("the second sbatch", (workdir / "paused").exists, 120)
        daemon(mini_cluster, "stop", "slurmctld")
        (workdir / "go").touch()
        (run,) = (workdir / "runs").iterdir()
        events = run / "events.jsonl"
        _wait_for("a retry while the controller is away", lambda: "controller_busy" in events.read_text(), 120)
    finally:
        daemon(mini_cluster, "start", "slurmctld")
    out, err = launch.communicate(timeout=300)
    assert launch.returncode == 0, err
    nodes = json.loads(out)["nodes"]
    assert len(nodes) == 6
    counts = count_jobs_by_name(mini_cluster, run.name)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts  # every node exactly once
    jobs = wait_final(mini_cluster, list(nodes.values()))
    assert {j.state for j in jobs.values()} == {JobState.COMPLETED, JobState.CANCELLED}  # on_failure never runs
