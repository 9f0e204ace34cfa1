"""What differs between Slurm versions, on whichever version the mini cluster runs (the matrix in
`make test` runs these on 22.05, 24.11 and 26.05): every trial of a big chunked sweep runs exactly
once, log directories exist before Slurm needs them, a launch failure is said in words, and a
submission refused by a limit is explained and resumable."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from slurmflow.slurm.capabilities import SACCT_REQUIRED, SQUEUE_REQUIRED
from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, launch_json, slurmflow, wait_final, workdir

pytestmark = [pytest.mark.integration, pytest.mark.smoke]
__all__ = ["workdir"]

WIDE = """\
# @package _global_
name: wide
sweep:
  seed: range(1500)
seed: 0
stages:
  work:
    per_trial: true
    command: bash -c 'echo "$SLURM_JOB_ID $1" >> "$SLURMFLOW_TRIAL_DIR/ran"' work ${seed}
    # Both partitions: 24 one-CPU slots over the three nodes.
    resources: {partition: "cpu,gpu", cpus: 1, mem: 100M, time: 5m}
  total:
    after_ok: [work]
    command: bash -c 'ls "$SLURMFLOW_RUN_DIR/trials" | wc -l > "$SLURMFLOW_WORKDIR/count"'
    resources: {partition: cpu, time: 5m}
"""


def wait_drained(container: str, run_id: str, timeout: float) -> None:
    """Until no job of the run is pending, running or completing (squeue, one line a job)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            [
                "docker",
                "exec",
                "-u",
                "alice",
                container,
                "squeue",
                "--noheader",
                "--format=%i %j",
                "--states=PD,R,CG,CF,S",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if not any(run_id in line for line in out.splitlines()):
            return
        assert time.monotonic() < deadline, f"run {run_id} still has jobs queued after {timeout} s"
        time.sleep(5)


def status_json(container: str, workdir: Path, run_id: str) -> dict[str, Any]:
    done = slurmflow(container, workdir, "status", run_id, "--runs-dir", "runs", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_capabilities_probed_from_the_cluster_match_its_commands(mini_cluster: str, slurm_version: str) -> None:
    caps = backend(mini_cluster).capabilities()
    assert caps.version.startswith(slurm_version)
    assert set(SACCT_REQUIRED) <= caps.sacct_fields
    # squeue's --Format names are case-insensitive, and --helpFormat spells some differently.
    assert {f.lower() for f in SQUEUE_REQUIRED} <= {f.lower() for f in caps.squeue_fields}
    # sacct's Restarts arrived in 24.11; squeue's RestartCnt is there on every supported version.
    assert ("Restarts" in caps.sacct_fields) == (caps.version_tuple >= (24, 11, 0))
    assert "RestartCnt" in caps.squeue_query_fields()
    assert caps.has_sbatch_option("array") and caps.has_sbatch_option("signal")


def test_1500_trial_chunked_sweep_runs_every_trial_exactly_once(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "wide.yaml").write_text(WIDE)
    doc = launch_json(mini_cluster, workdir, "experiment=wide")
    nodes: dict[str, str] = doc["nodes"]
    assert list(nodes) == ["work.0", "work.1", "total"]  # MaxArraySize 1001: two chunks
    run_dir = Path(str(doc["run_dir"]))
    # The log directories exist before Slurm needs them (22.05 does not create them), private.
    for key in nodes:
        assert stat.S_IMODE((run_dir / "logs" / key).stat().st_mode) == 0o700
    # Poll what is still queued (cheap), not the whole campaign: the test must not be what loads
    # a 2-core machine running 1,500 tasks. Then read the outcome from Slurm once.
    wait_drained(mini_cluster, str(doc["run_id"]), timeout=1500)
    jobs = wait_final(mini_cluster, list(nodes.values()), timeout=60)
    assert len(jobs) == 1501
    assert {j.state for j in jobs.values()} == {JobState.COMPLETED}, {
        k: j.state.name for k, j in jobs.items() if j.state is not JobState.COMPLETED
    }
    assert all((j.restarts or 0) == 0 for j in jobs.values())
    manifest = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(manifest) == 1500
    for trial in manifest:
        lines = (run_dir / "trials" / str(trial["index"]) / "ran").read_text().splitlines()
        assert len(lines) == 1 and lines[0].split()[1] == str(trial["index"]), (trial, lines)
    assert (run_dir / "stages" / "total" / "count").read_text().strip() == "1500"
    st = status_json(mini_cluster, workdir, str(doc["run_id"]))
    assert st["done"] and {s["stage"]: s["counts"] for s in st["stages"]} == {
        "work": {"COMPLETED": 1500},
        "total": {"COMPLETED": 1},
    }


LAUNCH_FAIL = """\
# @package _global_
name: lost
stages:
  one:
    command: "true"
    resources: {partition: cpu, time: 2m}
"""


def test_a_log_directory_lost_after_submission_is_a_launch_failure_said_in_words(
    mini_cluster: str, workdir: Path, slurm_version: str
) -> None:
    """slurmflow creates every log directory before sbatch; if one disappears before the task starts,
    Slurm before 23.02 cannot open the log and never runs the command. status and logs say so."""
    (workdir / "configs" / "experiment" / "lost.yaml").write_text(LAUNCH_FAIL)
    doc = launch_json(mini_cluster, workdir, "experiment=lost", "--hold")
    run_dir, run_id, job = Path(str(doc["run_dir"])), str(doc["run_id"]), str(doc["nodes"]["one"])
    subprocess.run(["rm", "-rf", str(run_dir / "logs" / "one")], check=True)
    subprocess.run(["docker", "exec", "-u", "alice", mini_cluster, "scontrol", "release", job], check=True)
    info = wait_final(mini_cluster, [job])[job]
    creates_dirs = tuple(int(x) for x in slurm_version.split(".")) >= (23, 2)
    if creates_dirs:
        assert info.state is JobState.COMPLETED
        return
    assert info.state is JobState.FAILED and (info.exit_code, info.signal) == (0, 53)
    (failure,) = next(s for s in status_json(mini_cluster, workdir, run_id)["stages"] if s["stage"] == "one")[
        "failures"
    ]
    assert failure["exit"] == "signal 53" and "could not start its batch step" in failure["why"]
    shown = slurmflow(mini_cluster, workdir, "logs", run_id, "one", "--runs-dir", "runs")
    assert shown.returncode == 2
    assert "ended FAILED (exit signal 53)" in shown.stderr and "could not start its batch step" in shown.stderr


LIMITED = """\
# @package _global_
name: limited
sweep:
  seed: range(5)
seed: 0
stages:
  prep:
    command: "true"
    resources: {partition: cpu, time: 2m}
  work:
    per_trial: true
    after_ok: [prep]
    command: bash -c 'echo "$SLURM_JOB_ID" >> "$SLURMFLOW_TRIAL_DIR/ran"' work ${seed}
    resources: {partition: cpu, time: 2m}
"""


def _set_max_submit(container: str, value: int) -> None:
    subprocess.run(
        ["docker", "exec", container, "sacctmgr", "-i", "modify", "user", "alice", "set", f"MaxSubmitJobs={value}"],
        check=True,
        capture_output=True,
    )


def test_a_submit_limit_refusal_names_the_limit_and_the_run_resumes(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "limited.yaml").write_text(LIMITED)
    _set_max_submit(mini_cluster, 3)
    try:
        # The controller learns the new limit from slurmdbd: wait until it enforces it.
        deadline = time.monotonic() + 30
        while "MaxSubmitJobs=3" not in _assoc_mgr(mini_cluster):
            assert time.monotonic() < deadline, "the controller never saw MaxSubmitJobs=3"
            time.sleep(0.5)
        # Known before anything is submitted: refused with the numbers, nothing written or queued.
        early = slurmflow(mini_cluster, workdir, "launch", "experiment=limited", "--runs-dir", "runs")
        assert early.returncode == 2, early.stderr
        (line,) = early.stderr.strip().splitlines()
        assert "queues 6 tasks on account lab-a" in line and "MaxSubmitJobs=3" in line and "room for 3" in line
        assert not (workdir / "runs").exists() or not list((workdir / "runs").iterdir())
        # --force: Slurm itself refuses what does not fit, and says so; the run resumes later.
        done = slurmflow(
            mini_cluster, workdir, "launch", "experiment=limited", "--runs-dir", "runs", "--hold", "--force"
        )
        assert done.returncode == 3, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "Slurm refused work.0 (5 tasks)" in lines[0] and "MaxSubmitJobs=3" in lines[0], lines[0]
        (run,) = (workdir / "runs").iterdir()
        assert f"slurmflow resume {run.name}" in lines[0]
        events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
        assert [e["node"] for e in events if e["event"] == "submitted"] == ["prep"]
        assert [e["node"] for e in events if e["event"] == "refused"] == ["work.0"]
    finally:
        _set_max_submit(mini_cluster, -1)
    deadline = time.monotonic() + 30
    while "MaxSubmitJobs=3" in _assoc_mgr(mini_cluster):
        assert time.monotonic() < deadline, "the controller kept MaxSubmitJobs=3"
        time.sleep(0.5)
    resumed = slurmflow(mini_cluster, workdir, "resume", run.name, "--runs-dir", "runs", "--json")
    assert resumed.returncode == 0, resumed.stderr
    nodes: dict[str, str] = json.loads(resumed.stdout)["nodes"]
    subprocess.run(["docker", "exec", "-u", "alice", mini_cluster, "scontrol", "release", nodes["prep"]], check=True)
    jobs = wait_final(mini_cluster, list(nodes.values()))
    assert len(jobs) == 6 and {j.state for j in jobs.values()} == {JobState.COMPLETED}
    for trial in (run / "trials").iterdir():
        assert len((trial / "ran").read_text().splitlines()) == 1


def _assoc_mgr(container: str) -> str:
    return subprocess.run(
        ["docker", "exec", container, "scontrol", "show", "assoc_mgr", "users=alice", "flags=assoc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
