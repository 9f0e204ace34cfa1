"""The pipeline against a real Slurm (slurmflow's slurm_cluster fixture): its jobs, their
dependencies, a GPU quota and a drained node, read back from Slurm's accounting."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from slurmflow.testing import MiniCluster

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline.py"


def submit(cluster: MiniCluster, out: Path, *args: str) -> dict[str, int]:
    # As alice, from inside the cluster: the project's folder is there at the same path.
    done = cluster.run("python3", str(PIPELINE), "submit", "--out", str(out), *args, user="alice")
    return {k: int(v) for k, v in json.loads(done.stdout).items()}


def test_the_pipeline_runs_in_order_and_each_trial_gets_its_own_gpu(
    slurm_cluster: MiniCluster, slurm_tmp_path: Path
) -> None:
    jobs = submit(slurm_cluster, slurm_tmp_path)
    rows = slurm_cluster.wait(*jobs.values(), timeout_s=300)
    assert {r.job_id: r.state for r in rows} == {
        str(jobs["preprocess"]): "COMPLETED",
        **{f"{jobs['train']}_{i}": "COMPLETED" for i in range(3)},
        str(jobs["aggregate"]): "COMPLETED",
    }
    best = json.loads((slurm_tmp_path / "best.json").read_text())
    assert best["lr"] == 0.01 and best["trials"] == 3
    for i in range(3):
        trial = json.loads((slurm_tmp_path / f"train-{i}.json").read_text())
        assert trial["node"].startswith("gpu")
        assert trial["slurm_job_gpus"] in {"0", "1"}  # one of the node's two GPUs
        assert trial["cuda_visible_devices"] is not None and len(trial["cuda_visible_devices"].split(",")) == 1
    # afterok: each stage started only once the one before it had ended.
    timed = {r.job_id: r.fields for r in slurm_cluster.sacct(*jobs.values(), fields=("Start", "End"))}
    pre_end = timed[str(jobs["preprocess"])]["End"]
    train = [timed[f"{jobs['train']}_{i}"] for i in range(3)]
    assert all(t["Start"] >= pre_end for t in train)
    assert timed[str(jobs["aggregate"])]["Start"] >= max(t["End"] for t in train)


def test_a_one_gpu_quota_runs_the_trials_one_at_a_time(slurm_cluster: MiniCluster, slurm_tmp_path: Path) -> None:
    slurm_cluster.set_limit(user="alice", GrpTRES="gres/gpu=1")
    try:
        jobs = submit(slurm_cluster, slurm_tmp_path)
        slurm_cluster.wait(*jobs.values(), timeout_s=300)
    finally:
        slurm_cluster.set_limit(user="alice", GrpTRES="gres/gpu=-1")
    rows = slurm_cluster.sacct(jobs["train"], fields=("Start", "End"))
    spans = sorted((r.fields["Start"], r.fields["End"]) for r in rows)
    assert len(spans) == 3 and {r.state for r in rows} == {"COMPLETED"}
    # Never two at once (sacct's times are to the second: a task may start the second another ends).
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_drained_node_takes_no_new_trial(slurm_cluster: MiniCluster, slurm_tmp_path: Path) -> None:
    slurm_cluster.drain("gpu1", reason="replacing a GPU")
    try:
        assert slurm_cluster.node_state("gpu1") == "drained"
        jobs = submit(slurm_cluster, slurm_tmp_path)
        rows = slurm_cluster.wait(*jobs.values(), timeout_s=300)
    finally:
        slurm_cluster.resume("gpu1")
    trained = [r for r in rows if r.job_id.startswith(f"{jobs['train']}_")]
    assert len(trained) == 3 and {r.node_list for r in trained} == {"gpu2"}
    assert {r.state for r in rows} == {"COMPLETED"}
