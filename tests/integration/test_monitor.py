"""The monitor on the mini cluster: retry by policy, revive dependents, survive a node loss."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, launch_json, slurmflow, wait_final, workdir

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch

FLAKY = """\
# @package _global_
name: flaky
sweep:
  seed: range(4)
seed: 0
fail_code: 75
stages:
  train:
    per_trial: true
    retry: {exit_codes: [75]}
    command: python -c "import os, sys, time; time.sleep(float(sys.argv[3])); sys.exit(int(sys.argv[2]) if sys.argv[1] == '2' and os.environ.get('SLURM_RESTART_COUNT', '0') == '0' else 0)" ${seed} ${fail_code} ${sleep}
    resources: {gpus: 1, time: 5m}
  eval:
    per_trial: true
    after_corr: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
  final:
    after_ok: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
  handler:
    after_not_ok: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
sleep: 1
"""


def monitor_until_done(container: str, workdir: Path, run_id: str, timeout: float = 240) -> list[dict[str, Any]]:
    """`slurmflow monitor --once` as cron would run it, until the run has ended."""
    actions: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Status first, then a tick: the run is over only when a tick on an ended run does nothing.
        st = json.loads(slurmflow(container, workdir, "status", run_id, "--runs-dir", "runs", "--json").stdout)
        done = slurmflow(container, workdir, "monitor", run_id, "--runs-dir", "runs", "--once", "--json")
        assert done.returncode == 0, done.stderr
        new = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        actions += new
        if st["done"] and not new:
            return actions
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not end; actions: {actions}")


def states_by_stage(container: str, nodes: dict[str, str]) -> dict[str, list[JobState]]:
    jobs = backend(container).query(list(nodes.values())).jobs
    out: dict[str, list[JobState]] = {}
    for j in jobs:
        stage = j.name.split(".")[-2] if j.array_job_id else j.name.split(".")[-1]
        out.setdefault(stage, []).append(j.state)
    return out


@pytest.mark.smoke
def test_retryable_exit_code_is_retried_and_dependents_run(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(mini_cluster, workdir, "experiment=flaky")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    actions = monitor_until_done(mini_cluster, workdir, run_id)
    train_2 = f"{nodes['train.0']}_2"
    assert [a["task"] for a in actions if a["event"] == "requeued"] == [train_2]
    rewired = {a["task"] for a in actions if a["event"] == "rewired"}
    # afterok on the whole array stays failed after the retry: the fan-in is always rewired. The
    # aftercorr task only when Slurm judged its dependency before the requeue (a race either way).
    assert nodes["final"] in rewired and rewired <= {f"{nodes['eval.0']}_2", nodes["final"]}, rewired
    states = states_by_stage(mini_cluster, nodes)
    assert states["train"] == [JobState.COMPLETED] * 4 and states["eval"] == [JobState.COMPLETED] * 4
    assert states["final"] == [JobState.COMPLETED]  # the after_ok fan-in ran after the retry
    info = backend(mini_cluster).query([train_2]).by_id()[train_2]
    assert info.restarts == 1
    st = json.loads(slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json").stdout)
    assert [a["event"] for a in st["actions"]].count("requeued") == 1


def test_program_failure_is_left_alone_and_explained(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(mini_cluster, workdir, "experiment=flaky", "fail_code=3")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    actions = monitor_until_done(mini_cluster, workdir, run_id)
    assert [(a["event"], a["task"]) for a in actions] == [("gave_up", f"{nodes['train.0']}_2")]
    states = states_by_stage(mini_cluster, nodes)
    assert sorted(s.name for s in states["eval"]) == ["CANCELLED", "COMPLETED", "COMPLETED", "COMPLETED"]
    assert states["final"] == [JobState.CANCELLED] and states["handler"] == [JobState.COMPLETED]
    st = json.loads(slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json").stdout)
    assert "not retried" in st["actions"][0]["why"]  # the monitor's decision, visible in status
    eval_failures = next(x for x in st["stages"] if x["stage"] == "eval")["failures"]
    assert [f["reason"] for f in eval_failures] == ["DependencyNeverSatisfied"]


@pytest.mark.smoke
def test_stopped_node_task_is_requeued_and_campaign_completes(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(
        mini_cluster, workdir, "experiment=flaky", "seed=range(2)", "sleep=30", "stages.train.resources.gpus=4"
    )
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    victim = f"{nodes['train.0']}_0"
    deadline = time.monotonic() + 60
    while (
        info := backend(mini_cluster).query([victim]).by_id().get(victim)
    ) is None or info.state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(1)
    node = str(info.nodes)
    subprocess.run(["docker", "exec", mini_cluster, "cluster-node", "stop", node], check=True)
    try:
        deadline = time.monotonic() + 120
        while (backend(mini_cluster).query([victim]).by_id()[victim].restarts or 0) < 1:
            assert time.monotonic() < deadline, "Slurm did not requeue the task of the stopped node"
            time.sleep(2)
        actions = monitor_until_done(mini_cluster, workdir, run_id, timeout=300)
    finally:
        subprocess.run(["docker", "exec", mini_cluster, "cluster-node", "start", node], check=True)
        subprocess.run(["docker", "exec", mini_cluster, "cluster-ready", "--wait", "90"], check=True)
    assert [a["task"] for a in actions if a["event"] == "released"] == [victim]
    states = states_by_stage(mini_cluster, nodes)
    assert all(s is JobState.COMPLETED for stage in ("train", "eval", "final") for s in states[stage]), states
    again = backend(mini_cluster).query([victim]).by_id()[victim]
    assert again.restarts == 1 and again.nodes != node  # it ran again, elsewhere


def test_monitor_as_a_job_keeps_the_campaign_moving_after_logout(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "flaky.yaml").write_text(FLAKY)
    doc = launch_json(mini_cluster, workdir, "experiment=flaky", "sleep=3")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    done = slurmflow(
        mini_cluster,
        workdir,
        "monitor",
        run_id,
        "--runs-dir",
        "runs",
        "--as-job",
        "--interval",
        "3",
        "--partition",
        "cpu",
    )
    assert done.returncode == 0 and "runs as Slurm job" in done.stdout, done.stderr
    # Nobody watches from here on: the monitor job retries train task 2 and revives its dependents.
    deadline = time.monotonic() + 300
    while True:
        states = states_by_stage(mini_cluster, nodes)
        if states.get("final") == [JobState.COMPLETED]:
            break
        assert time.monotonic() < deadline, states
        time.sleep(3)
    assert all(s is JobState.COMPLETED for s in states["train"] + states["eval"])
    events = [json.loads(line) for line in (Path(str(doc["run_dir"])) / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "requeued" for e in events) and sum(e["event"] == "monitor_job" for e in events) >= 2
    # Once the run has ended, the last monitor job submits no successor.
    deadline = time.monotonic() + 60
    while subprocess.run(
        ["docker", "exec", "-u", "alice", mini_cluster, "squeue", "--noheader", f"--name=sf.{run_id}.monitor"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip():
        assert time.monotonic() < deadline, "a monitor job is still queued after the run ended"
        time.sleep(2)


@pytest.mark.smoke
@pytest.mark.parametrize("failed_only", [False, True])
def test_retry_after_a_fix_reruns_only_what_did_not_succeed(
    mini_cluster: str, workdir: Path, failed_only: bool
) -> None:
    exp = FLAKY.replace(
        "command: python -c \"import os, sys, time; time.sleep(float(sys.argv[3])); sys.exit(int(sys.argv[2]) if sys.argv[1] == '2' and os.environ.get('SLURM_RESTART_COUNT', '0') == '0' else 0)\" ${seed} ${fail_code} ${sleep}",
        "command: python -c \"import os, sys; sys.exit(3 if sys.argv[1] in ('1', '2') and os.path.exists('broken') else 0)\" ${seed}",
    )
    assert exp != FLAKY
    (workdir / "configs" / "experiment" / "fixable.yaml").write_text(exp.replace("name: flaky", "name: fixable"))
    (workdir / "broken").write_text("a bug")
    doc = launch_json(mini_cluster, workdir, "experiment=fixable")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    wait_final(mini_cluster, list(nodes.values()))
    (workdir / "broken").unlink()  # the researcher fixes the bug
    flags = ["--failed"] if failed_only else []
    done = slurmflow(mini_cluster, workdir, "retry", run_id, "--runs-dir", "runs", "--json", *flags)
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)["resubmitted"]
    # --failed: only the tasks that failed, not those a failed dependency cancelled.
    assert list(new) == (["train.0"] if failed_only else ["train.0", "eval.0", "final"])
    arrays = subprocess.run(
        [
            "docker",
            "exec",
            "-u",
            "alice",
            mini_cluster,
            "squeue",
            "--states=all",
            "--array",
            "--noheader",
            "--format=%F %K",
            f"--jobs={new['train.0']}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(line.split()[1] for line in arrays.splitlines()) == ["1", "2"]  # only the failed indices
    wait_final(mini_cluster, list(new.values()))
    st = json.loads(slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json").stdout)
    counts = {s["stage"]: s["counts"] for s in st["stages"]}
    assert counts["train"] == {"COMPLETED": 4}
    if failed_only:
        assert counts["eval"] == {"COMPLETED": 2, "CANCELLED": 2} and counts["final"] == {"CANCELLED": 1}
    else:
        assert counts["eval"] == {"COMPLETED": 4} and counts["final"] == {"COMPLETED": 1}
    assert st["done"] is True
