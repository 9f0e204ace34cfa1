"""slurmflow.testing's pure parts: what a cluster spec means, and the argv the handle builds
(every value one argv word, none ever through a shell), checked without Docker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slurmflow.testing import Accounted, ClusterError, MiniCluster, Spec, cluster_dir


def test_the_default_spec_names_the_cluster_cluster_sh_starts() -> None:
    assert Spec().container == "slurmflow-mini"
    assert Spec(version="22.05").container == "slurmflow-mini-22.05"
    assert Spec(gpu_nodes=1, gpus_per_node=2, cpu_nodes=0).container == "slurmflow-mini-g1x2-c0"
    assert Spec(gpu_nodes=1, gpus_per_node=2, cpu_nodes=0).nodes == ["gpu1"]
    assert Spec(gpu_nodes=0, cpu_nodes=2).nodes == ["cpu1", "cpu2"]
    env = Spec(version="26.05", gpu_nodes=3).environment()
    assert env["SLURMFLOW_MINI_VERSION"] == "26.05" and env["SLURMFLOW_MINI_GPU_NODES"] == "3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "25.11"}, "expected one of 22.05, 24.11, 26.05"),
        ({"gpu_nodes": 0, "cpu_nodes": 0}, "expected 1 to 32 nodes"),
        ({"gpu_nodes": 40}, "expected 1 to 32 nodes"),
        ({"gpus_per_node": 0}, "expected 1 to 16"),
        ({"memory": "v2"}, "expected cgroup or none"),
    ],
)
def test_a_bad_spec_is_refused_in_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        Spec(**kwargs)  # type: ignore[arg-type]


def test_the_cluster_files_are_found_in_the_checkout() -> None:
    assert (cluster_dir() / "cluster.sh").is_file() and (cluster_dir() / "bin" / "start-cluster").is_file()


class Recording(MiniCluster):
    def __init__(self) -> None:
        super().__init__(Spec(), Path("/work"), started=False)
        self.calls: list[tuple[tuple[str, ...], str, str | None]] = []

    def run(
        self, *argv: str, user: str = "alice", input: str | None = None, **_: object
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, user, input))
        return subprocess.CompletedProcess(list(argv), 0, "42;mini\n", "")


def test_sbatch_options_are_argv_words_and_a_hostile_wrap_stays_one_word() -> None:
    handle = Recording()
    hostile = "echo $(id) ; rm -rf / # 'quoted' \"too\""
    assert handle.sbatch(wrap=hostile, user="bob", partition="gpu", gres="gpu:1", no_requeue=True, hold=False) == 42
    argv, user, stdin = handle.calls[-1]
    assert argv == ("sbatch", "--parsable", "--partition=gpu", "--gres=gpu:1", "--no-requeue", f"--wrap={hostile}")
    assert user == "bob" and stdin is None
    handle.sbatch("echo hi\n", array="0-3")
    argv, _user, stdin = handle.calls[-1]
    assert argv == ("sbatch", "--parsable", "--array=0-3") and stdin == "#!/bin/bash\necho hi\n"
    with pytest.raises(ClusterError, match="not both"):
        handle.sbatch("echo", wrap="echo")


def test_limits_nodes_and_ids_are_checked_before_anything_runs() -> None:
    handle = Recording()
    handle.set_limit(user="alice", account="lab-a", GrpTRES="gres/gpu=2", MaxSubmitJobs=10)
    assert handle.calls[-1][0] == (
        "sacctmgr", "-i", "modify", "user", "where", "name=alice", "account=lab-a", "set", "GrpTRES=gres/gpu=2",
        "MaxSubmitJobs=10",
    )  # fmt: skip
    for bad in (
        lambda: handle.set_limit(user="mallory", MaxJobs=1),
        lambda: handle.set_limit(account="lab-a", MaxJobs="1 where name=bob"),
        lambda: handle.set_limit(account="lab-a"),
        lambda: handle.drain("gpu9"),
        lambda: handle.stop_node("cpu1; reboot"),
        lambda: handle.restart("slurmd"),
        lambda: handle.sacct("12; id"),
        lambda: handle.sacct(12, fields=("State,Comment",)),
    ):
        calls = len(handle.calls)
        with pytest.raises(ClusterError):
            bad()
        assert len(handle.calls) == calls  # refused before any command ran


class Scripted(MiniCluster):
    """squeue and sacct answers in order, as a just-ended array shows them on 22.05."""

    def __init__(self, queue: list[list[str]], accounting: list[list[tuple[str, str]]]) -> None:
        super().__init__(Spec(), Path("/work"), started=False)
        self.queue, self.accounting = queue, accounting

    def queued(self, *job_ids: int | str) -> list[str]:
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]

    def sacct(self, *job_ids: int | str, fields: object = (), duplicates: bool = False) -> list[Accounted]:
        rows = self.accounting.pop(0) if len(self.accounting) > 1 else self.accounting[0]
        return [Accounted(j, s, "0:0", "cpu1") for j, s in rows]


def test_wait_returns_an_array_only_once_accounting_holds_every_task_it_was_seen_with() -> None:
    handle = Scripted(
        queue=[["7_0", "7_1", "7_2"], []],
        accounting=[
            [("7", "COMPLETED")],  # the task that ran under the array's own id, before slurmdbd split it
            [("7_0", "COMPLETED"), ("7_2", "COMPLETED")],  # task 1 not recorded yet
            [("7_0", "COMPLETED"), ("7_1", "COMPLETED"), ("7_2", "COMPLETED")],
        ],
    )
    rows = handle.wait(7, poll_s=0)
    assert [r.job_id for r in rows] == ["7_0", "7_1", "7_2"]
    assert handle.accounting == [[("7_0", "COMPLETED"), ("7_1", "COMPLETED"), ("7_2", "COMPLETED")]]


def test_wait_gives_up_naming_what_is_still_open() -> None:
    handle = Scripted(queue=[["8"]], accounting=[[("8", "RUNNING")]])
    with pytest.raises(ClusterError, match=r"jobs 8 did not end within 0 s: \{'8': 'RUNNING'\}"):
        handle.wait(8, timeout_s=0, poll_s=0)
