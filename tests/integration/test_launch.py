"""`slurmflow launch` on the mini cluster, run by alice inside it as on a login node; outcomes are
read back from Slurm (squeue/sacct) and from what the jobs wrote."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slurmflow.backends import SlurmCLI
from slurmflow.slurm.runner import SubprocessRunner
from slurmflow.slurm.types import JobInfo, JobState

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SLURMFLOW_MINI_SHARED", REPO / ".mini"))


@pytest.fixture
def workdir(mini_cluster: str) -> Iterator[Path]:
    """A project directory alice can write to, visible at the same path inside the cluster."""
    path = SHARED / f"it-{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "configs", path / "configs")
    shutil.copytree(REPO / "jobs", path / "jobs")
    subprocess.run(["chown", "-R", "2001:2001", str(path)], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def slurmflow(
    container: str, workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["docker", "exec", "-u", "alice", "-w", str(workdir), *extra, container, "slurmflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def backend(container: str) -> SlurmCLI:
    return SlurmCLI(SubprocessRunner(prefix=("docker", "exec", "-i", "-u", "alice", container)))


def wait_final(container: str, ids: list[str], timeout: float = 240) -> dict[str, JobInfo]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = backend(container).query(ids).by_id()
        if jobs and all(j.state.final for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not final after {timeout} s: { {k: v.state.name for k, v in jobs.items()} }")
        time.sleep(2)


def sacct(container: str, job_ids: list[str], fields: str) -> list[list[str]]:
    """Every attempt Slurm's accounting keeps of these jobs (`sacct -X -D`), one list of fields each."""
    out = subprocess.run(
        [
            "docker",
            "exec",
            "-u",
            "alice",
            container,
            "sacct",
            "-X",
            "-D",
            "-n",
            "-P",
            "-o",
            fields,
            "-j",
            ",".join(job_ids),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def launch_json(container: str, workdir: Path, *args: str) -> dict[str, Any]:
    done = slurmflow(container, workdir, "launch", "--runs-dir", "runs", "--json", *args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.mark.smoke
def test_demo_campaign_end_to_end(mini_cluster: str, workdir: Path) -> None:
    doc = launch_json(mini_cluster, workdir)
    nodes: dict[str, str] = doc["nodes"]
    run_dir = Path(str(doc["run_dir"]))
    assert list(nodes) == ["prep", "train.0", "eval.0", "report", "summary", "on_failure"]
    jobs = wait_final(mini_cluster, list(nodes.values()))
    by_name: dict[str, list[JobInfo]] = {}
    for j in jobs.values():
        by_name.setdefault(j.name.rsplit(".", 2)[-2] if j.array_job_id else j.name.split(".")[-1], []).append(j)
    states = {k: sorted({j.state for j in v}, key=lambda s: s.name) for k, v in by_name.items()}
    assert states == {
        "prep": [JobState.COMPLETED],
        "train": [JobState.COMPLETED],
        "eval": [JobState.COMPLETED],
        "report": [JobState.COMPLETED],
        "summary": [JobState.COMPLETED],
        "on_failure": [JobState.CANCELLED],
    }
    assert len(by_name["train"]) == 6 and all(j.nodes and j.nodes.startswith("gpu") for j in by_name["train"])
    assert by_name["on_failure"][0].reason == "DependencyNeverSatisfied"  # no training failed
    rows = list(csv.DictReader((run_dir / "results.csv").open()))  # `slurmflow results --csv` in the report stage
    assert len(rows) == 6 and all(r["state"] == "COMPLETED" and float(r["test_accuracy"]) > 0.9 for r in rows)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700 and run_dir.stat().st_uid == 2001
    # The callable stage went through submitit, with the planner's dependency on its sbatch line.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == 6 and summary["best"]["test_accuracy"] > 0.9
    script = next((run_dir / "submitit" / "summary").glob("*_submission.sh")).read_text()
    assert f"--dependency=afterok:{nodes['report']}" in script and "--kill-on-invalid-dep=yes" in script


SCORED = """
  score:
    per_trial: true
    after_corr: [eval]
    callable: jobs.summary:score
    resources: {partition: cpu, time: 5m}
"""


def test_per_trial_callable_through_submitit_arrays(mini_cluster: str, workdir: Path) -> None:
    demo = (workdir / "configs" / "experiment" / "demo.yaml").read_text()
    (workdir / "configs" / "experiment" / "scored.yaml").write_text(demo.replace("name: demo", "name: scored") + SCORED)
    doc = launch_json(mini_cluster, workdir, "experiment=scored", "--max-array-size", "4")
    nodes: dict[str, str] = doc["nodes"]
    assert [k for k in nodes if k.startswith("score")] == ["score.0", "score.1"]
    jobs = wait_final(mini_cluster, list(nodes.values()))
    score_tasks = [j for j in jobs.values() if ".score." in j.name]
    assert len(score_tasks) == 6 and all(j.state is JobState.COMPLETED for j in score_tasks)
    run_dir = Path(str(doc["run_dir"]))
    scores = [json.loads(p.read_text())["score"] for p in run_dir.glob("trials/*/score.json")]
    assert len(scores) == 6 and all(0.8 < s < 1 for s in scores)
    assert list((run_dir / "submitit" / "score.1").glob("*_1_0_result.pkl"))  # task 1 of the second chunk


CHUNKS = """\
# @package _global_
name: chunks
sweep:
  seed: range(10)
seed: 0
word: plain
stages:
  train:
    per_trial: true
    max_parallel: 3
    command: python -c "import sys; sys.exit(3 if int(sys.argv[1]) == 6 else 0)" ${seed}
    resources: {gpus: 1, time: 5m}
  eval:
    per_trial: true
    after_corr: [train]
    command: python -c "import os, sys; open(os.environ['SLURMFLOW_TRIAL_DIR'] + '/seen', 'w').write(sys.argv[1])" ${seed}
    resources: {partition: cpu, time: 5m}
"""


@pytest.mark.smoke
def test_chunked_arrays_keep_aftercorr_pairs_and_offsets(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "chunks.yaml").write_text(CHUNKS)
    doc = launch_json(mini_cluster, workdir, "experiment=chunks", "--max-array-size", "4")
    nodes: dict[str, str] = doc["nodes"]
    assert list(nodes) == ["train.0", "train.1", "train.2", "eval.0", "eval.1", "eval.2"]
    jobs = wait_final(mini_cluster, list(nodes.values()))
    # Trial 6 is task 2 of the second chunk (offset 4): it fails, and only its own eval is cancelled.
    assert jobs[f"{nodes['train.1']}_2"].state is JobState.FAILED
    assert jobs[f"{nodes['eval.1']}_2"].state is JobState.CANCELLED
    ok = [k for k, j in jobs.items() if j.state is JobState.COMPLETED]
    assert len(ok) == 18
    run_dir = Path(str(doc["run_dir"]))
    manifest = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    for trial in manifest:
        seen = run_dir / "trials" / str(trial["index"]) / "seen"
        if trial["index"] == 6:
            assert not seen.exists()
        else:
            assert seen.read_text() == str(trial["index"])  # each eval task found its own trial
    throttle = subprocess.run(
        ["docker", "exec", mini_cluster, "scontrol", "show", "job", nodes["train.0"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ArrayTaskThrottle=1" in throttle  # 3 slots over 3 chunks


CRASH_AFTER = """#!/bin/bash
# Runs a Slurm command; after the Nth sbatch (which DID create its job) kills the caller, like a
# lost ssh session, or answers "Socket timed out" like an overloaded controller.
count_file=$1 n=$2 mode=$3; shift 3
"$@"; rc=$?
if [ "$1" = sbatch ] && [ "$2" = --parsable ]; then  # a submission, not the probe's sbatch --help
  c=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 )); echo $c > "$count_file"
  if [ "$c" -eq "$n" ]; then
    if [ "$mode" = kill ]; then kill -9 $PPID; exit 137; fi
    echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1
  fi
fi
exit $rc
"""


def count_jobs_by_name(container: str, run_id: str) -> dict[str, int]:
    out = subprocess.run(
        ["docker", "exec", "-u", "alice", container, "squeue", "--states=all", "--noheader", "--format=%j %F"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen: dict[str, set[str]] = {}
    for line in out.splitlines():
        name, base = line.split()
        if run_id in name:
            seen.setdefault(name, set()).add(base)
    return {k: len(v) for k, v in seen.items()}


@pytest.mark.smoke
@pytest.mark.parametrize("mode", ["kill", "timeout"])
def test_interrupted_launch_resumes_without_duplicates(mini_cluster: str, workdir: Path, mode: str) -> None:
    wrapper = workdir / "crash-after.sh"
    wrapper.write_text(CRASH_AFTER)
    wrapper.chmod(0o755)
    prefix = f"{wrapper} {workdir}/count 3 {mode}"
    done = slurmflow(mini_cluster, workdir, "launch", "--runs-dir", "runs", "--via", prefix)
    runs = list((workdir / "runs").iterdir())
    assert len(runs) == 1
    run_id = runs[0].name
    if mode == "kill":
        assert done.returncode != 0  # the launcher died mid-way
        resumed = slurmflow(mini_cluster, workdir, "resume", run_id, "--runs-dir", "runs", "--via", "", "--json")
        assert resumed.returncode == 0, resumed.stderr
        nodes = json.loads(resumed.stdout)["nodes"]
    else:
        assert done.returncode == 0, done.stderr  # reconciled by name, not resubmitted
        nodes = {
            ev["node"]: ev["job_id"]
            for ev in map(json.loads, (runs[0] / "events.jsonl").read_text().splitlines())
            if ev["event"] == "submitted"
        }
    assert len(nodes) == 6
    counts = count_jobs_by_name(mini_cluster, run_id)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    jobs = wait_final(mini_cluster, list(nodes.values()))
    assert sum(j.state is JobState.COMPLETED for j in jobs.values()) == 15


def test_editing_the_config_after_launch_does_not_reach_pending_jobs(mini_cluster: str, workdir: Path) -> None:
    doc = launch_json(mini_cluster, workdir, "seed=range(2)", "model.lr=0.1", "model.epochs=7")
    (workdir / "configs" / "experiment" / "demo.yaml").write_text("garbage: [\n")  # broken after launch
    jobs = wait_final(mini_cluster, list(doc["nodes"].values()))
    assert all(j.state is not JobState.FAILED for j in jobs.values())
    run_dir = Path(str(doc["run_dir"]))
    evals = [json.loads(p.read_text()) for p in run_dir.glob("trials/*/eval.json")]
    assert len(evals) == 2 and {e["epochs"] for e in evals} == {7}


@pytest.mark.smoke
def test_hostile_values_reach_the_job_as_one_literal_argument(mini_cluster: str, workdir: Path) -> None:
    exp = CHUNKS.replace("sweep:\n  seed: range(10)", "sweep:\n  seed: range(1)").replace(
        'python -c "import sys; sys.exit(3 if int(sys.argv[1]) == 6 else 0)" ${seed}',
        "python -c \"import os, sys; open(os.environ['SLURMFLOW_TRIAL_DIR'] + '/word', 'w').write(sys.argv[1])\" ${word}",
    )
    (workdir / "configs" / "experiment" / "hostile.yaml").write_text(exp.replace("name: chunks", "name: hostile"))
    value = "a b 'c' \"d\" * ~ \\ # % {x}; $(touch pwned) `id` && |"
    hydra_value = value.replace("'", "\\'")  # Hydra's quoted strings escape only quotes
    doc = launch_json(mini_cluster, workdir, "experiment=hostile", f"word='{hydra_value}'")
    wait_final(mini_cluster, list(doc["nodes"].values()))
    (word,) = Path(str(doc["run_dir"])).glob("trials/*/word")
    assert word.read_text() == value
    assert not list(workdir.rglob("pwned")) and not list(Path(str(doc["run_dir"])).rglob("pwned"))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.resources.partition=huge"], "no such key"),
        (["+stages.train.resources.partition=huge"], "no partition 'huge'"),
        (["+stages.train.resources.account=lab-b"], "no association with account 'lab-b'"),
        (["stages.train.resources.gpus=5"], "no node of partition 'gpu' has more than 4"),
        (["stages.train.resources.time=forever"], "time limit 'forever' is not valid"),
        (["stages.train.after_ok=[nosuch]"], "unknown stage 'nosuch'"),
        (["+stages.prep.after_ok=[report]"], "dependency cycle"),
        (["seed=range(0)"], "yields no values"),
        (["stages.train.per_trial='false'"], "stages.train.per_trial: expected true or false"),
        (["stages.train.resources.time=0", "stages.train.resources.gpus=1.5"], "gpus: expected a whole number"),
        (["modle.lr=0.1"], "no such key"),
    ],
)
def test_bad_input_exits_2_and_submits_nothing(
    mini_cluster: str, workdir: Path, overrides: list[str], needle: str
) -> None:
    before = count_jobs_by_name(mini_cluster, "sf.")
    done = slurmflow(mini_cluster, workdir, "launch", "--runs-dir", "runs", *overrides)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slurmflow: error:") and needle in lines[0], done.stderr
    assert count_jobs_by_name(mini_cluster, "sf.") == before
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def test_malformed_yaml_exits_2(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "demo.yaml").write_text("name: demo\nstages: [unclosed\n")
    done = slurmflow(mini_cluster, workdir, "plan")
    assert done.returncode == 2 and "malformed YAML" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _spans(container: str, job: str) -> list[tuple[str, str]]:
    """(start, end) of each task of an array that ran, from accounting (ISO times sort as text)."""
    out = subprocess.run(
        ["docker", "exec", container, "sacct", "-X", "-P", "-n", "-j", job, "--format=Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [tuple(line.split("|")) for line in out.splitlines() if line.strip()]
    return [(a, b) for a, b in rows if a not in ("", "None", "Unknown") and b not in ("", "None", "Unknown")]


@pytest.mark.smoke
def test_status_cancel_and_logs_of_a_run(mini_cluster: str, workdir: Path) -> None:
    """status explains a failure and a quota pending reason; cancel --stage; logs prints a task's log."""
    # Each training task lasts 2 s: long enough for the cap's effect to be seen in Slurm's records.
    slow = CHUNKS.replace('"import sys; sys.exit(3', '"import sys, time; time.sleep(2); sys.exit(3')
    assert slow != CHUNKS
    (workdir / "configs" / "experiment" / "chunks.yaml").write_text(slow)
    subprocess.run(
        ["docker", "exec", mini_cluster, "sacctmgr", "-i", "modify", "account", "lab-a", "set", "GrpTRES=gres/gpu=1"],
        check=True,
        capture_output=True,
    )
    try:
        doc = launch_json(mini_cluster, workdir, "experiment=chunks", "seed=range(8)")
        run_id = str(doc["run_id"])
        nodes: dict[str, str] = doc["nodes"]

        def status() -> dict[str, Any]:
            done = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json", "--tasks")
            assert done.returncode == 0, done.stderr
            parsed: dict[str, Any] = json.loads(done.stdout)
            return parsed

        deadline, quota_text, most_running = time.monotonic() + 120, "", 0
        while True:
            st = status()
            train = next(x for x in st["stages"] if x["stage"] == "train")
            most_running = max(most_running, train["counts"].get("RUNNING", 0))
            if "AssocGrpGRES" in train["pending"] and not quota_text:
                assert train["pending"]["AssocGrpGRES"]["why"].startswith("the account's concurrent GPU cap")
                quota_text = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs").stdout
            if train["counts"].get("FAILED"):
                break
            assert time.monotonic() < deadline, st
            time.sleep(1)
        assert "concurrent GPU cap" in quota_text  # the quota reason, in words, in the table view
        assert most_running == 1  # tasks ran, one at a time as status saw them
        # ... and as Slurm recorded them: no two training tasks overlapped in time.
        spans = sorted(_spans(mini_cluster, nodes["train.0"]))
        assert len(spans) >= 2 and all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
        (failure,) = train["failures"]
        assert failure["trial"] == 6 and failure["exit_code"] == 3 and failure["state"] == "FAILED"
        assert failure["log"].endswith("/logs/train.0/6.out")

        done = slurmflow(mini_cluster, workdir, "cancel", run_id, "--runs-dir", "runs", "--stage", "train")
        assert done.returncode == 0, done.stderr
        jobs = wait_final(mini_cluster, list(nodes.values()))
        assert not any(j.state is JobState.PENDING for j in jobs.values())
        assert status()["done"] is True

        shown = slurmflow(mini_cluster, workdir, "logs", run_id, "train", "0", "--runs-dir", "runs")
        assert shown.returncode == 0 and shown.stdout == (Path(str(doc["run_dir"])) / "logs/train.0/0.out").read_text()
        bad = slurmflow(mini_cluster, workdir, "logs", run_id, "nosuch", "--runs-dir", "runs")
        assert bad.returncode == 2 and "no such stage" in bad.stderr
    finally:
        subprocess.run(
            [
                "docker",
                "exec",
                mini_cluster,
                "sacctmgr",
                "-i",
                "modify",
                "account",
                "lab-a",
                "set",
                "GrpTRES=gres/gpu=-1",
            ],
            check=True,
            capture_output=True,
        )
