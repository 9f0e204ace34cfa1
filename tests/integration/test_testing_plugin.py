"""slurmflow.testing on the mini cluster: the handle's commands read back from Slurm, the cluster's
realism (devices, drain, power loss), and the sample outside project, installed from the wheel as
another project would, passing its Slurm tests through the slurm_cluster fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slurmflow.testing import ClusterError, MiniCluster, Spec
from tests.conftest import VERSION

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def handle(mini_cluster: str) -> MiniCluster:
    """The cluster `make test` started, through the handle an outside project gets."""
    found = MiniCluster.attach(Spec(version=VERSION, name=mini_cluster))
    if found is None:
        pytest.fail(f"{mini_cluster} is not the cluster docker/slurm-cluster/cluster.sh starts: run it again")
    return found


@pytest.fixture
def scratch(handle: MiniCluster, request: pytest.FixtureRequest) -> Iterator[Path]:
    path = handle.scratch(request.node.name)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def until(check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        time.sleep(0.5)


@pytest.mark.smoke
def test_the_handle_runs_commands_as_each_user_and_reads_their_jobs_from_accounting(
    handle: MiniCluster, scratch: Path
) -> None:
    assert handle.version.startswith(f"{VERSION}.")
    for user in ("alice", "bob", "carol"):
        assert handle.run("id", "-un", user=user).stdout.strip() == user
    failing = handle.sbatch(wrap="exit 3", user="bob", partition="cpu", output=str(scratch / "%j.out"))
    array = handle.sbatch(
        "echo task $SLURM_ARRAY_TASK_ID\n", array="0-2", partition="cpu", output=str(scratch / "%A_%a.out")
    )
    rows = {r.job_id: r for r in handle.wait(failing, array, timeout_s=180)}
    assert (rows[str(failing)].state, rows[str(failing)].exit_code) == ("FAILED", "3:0")
    assert {rows[f"{array}_{i}"].state for i in range(3)} == {"COMPLETED"}
    accounts = {r.job_id: r.fields["Account"] for r in handle.sacct(failing, array, fields=("Account",))}
    assert accounts[str(failing)] == "lab-b" and accounts[f"{array}_0"] == "lab-a"
    assert (scratch / f"{array}_2.out").read_text().strip() == "task 2"  # the work folder is shared
    with pytest.raises(ClusterError, match="exited"):
        handle.run("false")


@pytest.mark.smoke
def test_each_job_sees_only_its_gpus_as_on_a_real_gpu_node(handle: MiniCluster, scratch: Path) -> None:
    probe = (
        "import errno, glob, json, os, sys\n"
        "opened = {}\n"
        "for f in sorted(glob.glob('/var/lib/fake-gpus/gpu1-nvidia*')):\n"
        "    try:\n"
        "        os.close(os.open(f, os.O_RDONLY))\n"
        "        opened[f[-1]] = 'ok'\n"
        "    except OSError as e:\n"
        "        opened[f[-1]] = errno.errorcode[e.errno]\n"
        "keys = ('CUDA_VISIBLE_DEVICES', 'SLURM_JOB_GPUS')\n"
        "json.dump({'env': {k: os.environ.get(k) for k in keys}, 'open': opened}, open(sys.argv[1], 'w'))\n"
    )
    (scratch / "probe.py").write_text(probe)
    go = scratch / "go"
    jobs = [
        handle.sbatch(
            wrap=f"python3 {scratch}/probe.py {scratch}/{k}.json; while [ ! -f {go} ]; do sleep 0.2; done",
            partition="gpu",
            nodelist="gpu1",
            gres="gpu:2",
            output=str(scratch / f"{k}.out"),
        )
        for k in ("a", "b")
    ]
    until(lambda: all((scratch / f"{k}.json").exists() for k in ("a", "b")))  # both hold gpu1 at once
    go.touch()
    assert {r.state for r in handle.wait(*jobs)} == {"COMPLETED"}
    seen = [json.loads((scratch / f"{k}.json").read_text()) for k in ("a", "b")]
    given = [set(s["env"]["SLURM_JOB_GPUS"].split(",")) for s in seen]
    assert given[0] | given[1] == {"0", "1", "2", "3"} and not given[0] & given[1]  # the node's indices
    if handle.memory_enforcement == "cgroup/v1":
        # ConstrainDevices: CUDA numbers a job's GPUs from 0, and the others cannot be opened.
        assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in seen] == ["0,1", "0,1"]
        for s, mine in zip(seen, given, strict=True):
            assert s["open"] == {i: "ENXIO" if i in mine else "EPERM" for i in "0123"}  # ENXIO: no driver
    else:
        assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in seen] == [s["env"]["SLURM_JOB_GPUS"] for s in seen]


@pytest.mark.smoke
def test_a_drained_node_finishes_its_job_and_starts_no_new_one_until_resumed(
    handle: MiniCluster, scratch: Path
) -> None:
    go = scratch / "go"
    wait_go = f"while [ ! -f {go} ]; do sleep 0.2; done"
    running = handle.sbatch(wrap=wait_go, partition="cpu", nodelist="cpu1", output=str(scratch / "a.out"))
    until(lambda: handle.run("squeue", "-h", "-j", str(running), "-o", "%T").stdout.strip() == "RUNNING")
    handle.drain("cpu1", reason="disk replacement")
    later = None
    try:
        assert handle.node_state("cpu1") == "draining"
        later = handle.sbatch(wrap="true", partition="cpu", nodelist="cpu1", output=str(scratch / "b.out"))
        go.touch()
        [row] = handle.wait(running)
        assert row.state == "COMPLETED"
        until(lambda: handle.node_state("cpu1") == "drained")
        state, reason = handle.run("squeue", "-h", "-j", str(later), "-o", "%T|%r").stdout.strip().split("|")
        assert state == "PENDING" and "ReqNodeNotAvail" in reason, reason
        handle.resume("cpu1")
        [row] = handle.wait(later)
        assert row.state == "COMPLETED" and row.node_list == "cpu1"
    finally:
        if handle.node_state("cpu1").startswith("drain"):
            handle.resume("cpu1")
        if later is not None:
            handle.run("scancel", str(later), check=False)


def test_a_power_loss_stops_everything_the_node_runs(handle: MiniCluster, scratch: Path) -> None:
    token = uuid.uuid4().hex
    # A job with a child of its own in the background, as a data loader would be.
    job = handle.sbatch(
        f"(exec -a sf-{token}-child sleep 600) &\nexec -a sf-{token}-main sleep 600\n",
        partition="cpu", nodelist="cpu1", no_requeue=True, output=str(scratch / "a.out"),
    )  # fmt: skip

    def alive() -> int:
        out = handle.run("pgrep", "-u", "alice", "-f", token, check=False, user="root").stdout
        return len(out.split())

    until(lambda: alive() >= 2)
    handle.stop_node("cpu1")
    try:
        assert alive() == 0  # at once: the job's processes died with the node
        [row] = handle.wait(job, timeout_s=180)
        assert row.state == "NODE_FAIL"
    finally:
        handle.start_node("cpu1")
    assert handle.node_state("cpu1") in ("idle", "mixed")


def test_association_limits_and_a_controller_restart(handle: MiniCluster, scratch: Path) -> None:
    handle.set_limit(account="lab-b", MaxJobs=2, GrpTRES="gres/gpu=3")
    try:
        row = next(a for a in handle.associations("MaxJobs", "GrpTRES") if a["Account"] == "lab-b" and not a["User"])
        assert row["MaxJobs"] == "2" and row["GrpTRES"] == "gres/gpu=3"
    finally:
        handle.set_limit(account="lab-b", MaxJobs=-1, GrpTRES="gres/gpu=-1")
    row = next(a for a in handle.associations("MaxJobs", "GrpTRES") if a["Account"] == "lab-b" and not a["User"])
    assert row["MaxJobs"] == "" and row["GrpTRES"] == ""
    with pytest.raises(ClusterError, match="expected a sacctmgr limit"):
        handle.set_limit(user="alice", GrpTRES="gres/gpu=1 MaxJobs=0")  # one value, never two settings
    held = handle.sbatch(wrap="true", partition="cpu", hold=True, output=str(scratch / "h.out"))
    try:
        handle.restart("slurmctld")
        assert handle.queued(held) == [str(held)]  # the controller kept its queue
    finally:
        handle.run("scancel", str(held), check=False)


def test_the_sample_project_passes_its_slurm_tests_from_the_wheel(tmp_path: Path) -> None:
    """An outside project, as its CI would: slurmflow[testing] installed from the wheel into the
    project's own environment, the project's pytest run outside slurmflow's checkout."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "wheels").glob("slurmflow-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[testing]"], capture_output=True, text=True, timeout=900
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    project = tmp_path / "project"
    shutil.copytree(REPO / "examples" / "slurm-ci-example", project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURMFLOW_MINI")}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "slurmflow.testing", "dir"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    assert where.stdout.strip().startswith(str(venv)), where  # the wheel's copy of the cluster, not the checkout's
    spec = Spec(version=VERSION, gpu_nodes=2, gpus_per_node=2, cpu_nodes=1)  # the sample's pyproject
    try:
        done = subprocess.run(
            [str(venv / "bin" / "pytest"), "-q", "--slurm-version", VERSION],
            capture_output=True,
            text=True,
            env=env,
            cwd=project,
            timeout=1800,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "3 passed" in done.stdout, done.stdout[-3000:]
        # The fixture removed the cluster it started.
        gone = subprocess.run(["docker", "inspect", spec.container], capture_output=True, text=True)
        assert gone.returncode != 0, f"{spec.container} was left running"
    finally:
        subprocess.run(["docker", "rm", "-f", spec.container], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{spec.container}-net"], capture_output=True)
