"""Failures only a real Slurm produces, on the mini cluster: a job over its --mem ends OUT_OF_MEMORY
(cgroup enforcement) and the monitor resubmits it with more memory; a job of a scavenger QOS is
preempted by one of QOS high, PREEMPTED in accounting, and either retried by the policy (the
cancelling QOS) or, checkpointing, warned by its own signal, saved and resumed where it stopped."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from slurmflow.rundir import metrics
from slurmflow.slurm.types import JobInfo, JobState
from tests.integration.test_checkpoint import ONE_TRIAL, uninterrupted_training
from tests.integration.test_launch import backend, launch_json, sacct, slurmflow, workdir
from tests.integration.test_monitor import monitor_until_done

pytestmark = pytest.mark.integration
__all__ = ["workdir"]

# Trial 0 holds 250 MB (every page written), trial 1 10 MB; both start with 200M. The task's own
# wrapper counts against the limit too (a job's cgroup holds all its processes, as on any cluster).
HUNGRY = """\
# @package _global_
name: hungry
sweep:
  seed: range(2)
seed: 0
need_mb: 250
stages:
  train:
    per_trial: true
    retry: {oom_mem_factor: 2, oom_mem_cap: 1G, oom_retries: 2}
    command: python -c "import sys, time; b = b'x' * ((int(sys.argv[2]) if sys.argv[1] == '0' else 10) << 20); time.sleep(1); print('held', len(b) >> 20, 'MB')" ${seed} ${need_mb}
    resources: {partition: cpu, cpus: 1, mem: 200M, time: 5m}
  eval:
    per_trial: true
    after_corr: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
  final:
    after_ok: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
"""

# One task holding a whole GPU node until something takes it: the high job preempts it.
VICTIM = """\
# @package _global_
name: victim
seed: 0
stages:
  work:
    command: python -c "import time; [time.sleep(1) for _ in range(int(${seconds}))]"
    resources: {gpus: 4, cpus: 1, time: 10m, qos: scavenger-cancel}
    retry: {infra: 2}
  after:
    after_ok: [work]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
seconds: 60
"""


def wait_running(container: str, task: str, timeout: float = 120) -> JobInfo:
    deadline = time.monotonic() + timeout
    while (info := backend(container).query([task]).by_id().get(task)) is None or info.state is not JobState.RUNNING:
        assert time.monotonic() < deadline, f"{task} did not start: {info}"
        time.sleep(1)
    return info


def preempt(container: str, node: str) -> str:
    """A job of QOS high that needs every GPU of `node`: Slurm must preempt what holds them."""
    done = subprocess.run(
        [
            "docker",
            "exec",
            "-u",
            "alice",
            "-w",
            "/tmp",
            container,
            "sbatch",
            "--parsable",
            "--qos=high",
            f"--nodelist={node}",
            "--gres=gpu:4",
            "--time=2",
            "--output=/dev/null",
            "--wrap",
            "sleep 5",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().split(";")[0]


def status(container: str, workdir: Path, run_id: str) -> dict[str, dict[str, int]]:
    st = json.loads(slurmflow(container, workdir, "status", run_id, "--runs-dir", "runs", "--json").stdout)
    return {s["stage"]: s["counts"] for s in st["stages"]}


@pytest.mark.smoke
def test_a_task_over_its_memory_ends_out_of_memory_and_is_resubmitted_with_more(
    mini_cluster: str, workdir: Path
) -> None:
    (workdir / "configs" / "experiment" / "hungry.yaml").write_text(HUNGRY)
    doc = launch_json(mini_cluster, workdir, "experiment=hungry")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    actions = monitor_until_done(mini_cluster, workdir, run_id, timeout=300)

    first = f"{nodes['train.0']}_0"
    # Slurm's verdict, not slurmflow's: the kernel's OOM killer in the job's cgroup.
    assert sacct(mini_cluster, [first], "State,ReqMem") == [["OUT_OF_MEMORY", "200M"]]
    (again,) = [a for a in actions if a["event"] == "resubmitted"]
    assert again["mem"] == "400M" and again["indices"] == [0], again
    new = str(again["job_id"])
    rows = sacct(mini_cluster, [new], "JobID,State,ReqMem")
    assert [r[1:] for r in rows] == [["COMPLETED", "400M"]], rows
    # The other trial fitted; the resubmitted trial's dependents were revived and ran.
    assert sacct(mini_cluster, [f"{nodes['train.0']}_1"], "State") == [["COMPLETED"]]
    assert status(mini_cluster, workdir, run_id) == {
        "train": {"COMPLETED": 2},
        "eval": {"COMPLETED": 2},
        "final": {"COMPLETED": 1},
    }
    log = (Path(str(doc["run_dir"])) / "logs" / "train.0" / "0.out").read_text()
    assert "held 250 MB" in log


@pytest.mark.smoke
def test_a_preempted_task_is_retried_by_the_policy_and_its_dependents_run(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "victim.yaml").write_text(VICTIM)
    doc = launch_json(mini_cluster, workdir, "experiment=victim")
    run_id, nodes = str(doc["run_id"]), doc["nodes"]
    victim = nodes["work"]
    info = wait_running(mini_cluster, victim)
    high = preempt(mini_cluster, str(info.nodes))
    actions = monitor_until_done(mini_cluster, workdir, run_id, timeout=400)

    # QOS scavenger-cancel: the job ends PREEMPTED, and the high job runs where it was.
    assert sacct(mini_cluster, [victim], "State") == [["PREEMPTED"]]
    assert sacct(mini_cluster, [high], "State,NodeList") == [["COMPLETED", str(info.nodes)]]
    # The policy's infrastructure class retries it as a new job (a requeued preempted job would be
    # recorded PREEMPTED again however it ended); that job completes and the dependent follows it.
    (moved,) = [a for a in actions if a["event"] == "resubmitted"]
    assert moved["why"].startswith("PREEMPTED") and moved["mem"] is None, moved
    assert not any(a["event"] in {"requeued", "gave_up"} for a in actions), actions
    assert sacct(mini_cluster, [str(moved["job_id"])], "State") == [["COMPLETED"]]
    counts = status(mini_cluster, workdir, run_id)
    assert counts == {"work": {"COMPLETED": 1}, "after": {"COMPLETED": 1}}, counts


def test_a_checkpointing_task_preempted_saves_and_resumes_where_it_stopped(mini_cluster: str, workdir: Path) -> None:
    config = subprocess.run(
        ["docker", "exec", mini_cluster, "scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    if "send_user_signal" not in config:
        pytest.skip("Slurm 22.05 has no PreemptParameters=send_user_signal: no signal begins a preemption's grace")
    epochs = 30
    doc = launch_json(
        mini_cluster,
        workdir,
        *ONE_TRIAL,
        f"model.epochs={epochs}",
        "model.epoch_sleep=1",
        "stages.train.resources.gpus=4",
        "+stages.train.resources.qos=scavenger",
        "stages.train.resources.time=30m",  # no time-limit warning: the only signal is the preemption's
        "stages.train.checkpoint.seconds=60",
        "stages.train.checkpoint.grace=20",
    )
    run_id, run_dir = str(doc["run_id"]), Path(str(doc["run_dir"]))
    task = f"{doc['nodes']['train.0']}_0"
    info = wait_running(mini_cluster, task)
    (trial,) = (run_dir / "trials").iterdir()
    deadline = time.monotonic() + 120
    while (m := metrics.read(trial).get("train")) is None or len(m.curves.get("loss", {})) < 5:
        assert time.monotonic() < deadline, "the training logged no 5 epochs"
        time.sleep(1)
    high = preempt(mini_cluster, str(info.nodes))
    monitor_until_done(mini_cluster, workdir, run_id, timeout=600)

    assert sacct(mini_cluster, [high], "State") == [["COMPLETED"]]
    # QOS scavenger: Slurm requeues the preempted job itself (the wrapper, seeing PreemptTime set,
    # leaves it to Slurm), and the next attempt, under the same job id, completes.
    assert [r[0] for r in sacct(mini_cluster, [task], "State")] == ["PREEMPTED", "COMPLETED"]
    log = (run_dir / "logs" / "train.0" / "0.out").read_text()
    assert "USR1: checkpointing" in log  # the preemption's grace began with the job's own signal
    assert "is being preempted: Slurm requeues or ends it" in log
    assert "checkpoint saved at epoch" in log and "resumed from epoch" in log, log
    got = metrics.read(trial)["train"]
    ref = uninterrupted_training(mini_cluster, workdir, run_dir, epochs)
    assert got.values() == ref.values() and got.curves == ref.curves
