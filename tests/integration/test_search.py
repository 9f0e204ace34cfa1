"""`search:` on the mini cluster: Optuna studies run as Slurm arrays and advanced by the monitor,
with no driver process. The example objective is jobs/noisy2d.py (Branin plus seeded noise).

What is checked comes from Slurm (sacct) and from the study itself (read through `slurmflow
results --json`, which opens the run's Optuna storage)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from slurmflow.rundir.store import RunStore
from tests.integration.test_launch import launch_json, slurmflow, workdir

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch

FAST = ("step_sleep=0", "steps=2", "stages.train.resources.gpus=0")  # a trial takes about a second

# search_pruned with a handler for failed training: a pruned trial must not make it run. The
# pruned task is cancelled as soon as the pruner decides (grace 0). Random sampling, so that
# later trials are as often bad as early ones and the pruner has something to stop (TPE soon
# proposes only good points, which a median pruner rightly lets run).
PRUNE = """\
# @package _global_
defaults:
  - search_pruned
  - _self_
name: prune_it
search:
  sampler: random
  n_trials: 16
  seed: 3
  grace: 0
steps: 20
step_sleep: 0.5
stages:
  handler:
    after_not_ok: [train]
    command: python -c "pass"
    resources: {partition: cpu, time: 5m}
"""


def alice(container: str, *argv: str) -> str:
    done = subprocess.run(
        ["docker", "exec", "-u", "alice", container, *argv], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def follow(container: str, workdir: Path, run_id: str) -> subprocess.Popen[str]:
    """The foreground monitor, ticking every second or two, until the run (and its search) ends."""
    argv = ["monitor", run_id, "--runs-dir", "runs", "--interval", "1", "--max-interval", "2"]
    return subprocess.Popen(
        ["docker", "exec", "-u", "alice", "-w", str(workdir), container, "slurmflow", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ended(monitors: Iterable[subprocess.Popen[str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for m in monitors:
        try:
            m.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            m.kill()
            out = m.communicate()[0]
            raise AssertionError(f"the monitor did not end the run in {timeout} s:\n{out[-3000:]}") from None
        out = m.communicate()[0]
        assert m.returncode == 0, out[-3000:]


def study(container: str, workdir: Path, run_id: str) -> dict[str, Any]:
    done = slurmflow(container, workdir, "results", run_id, "--runs-dir", "runs", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)["runs"][0]["study"]
    assert "error" not in found, found
    return found


def status(container: str, workdir: Path, run_id: str) -> dict[str, Any]:
    done = slurmflow(container, workdir, "status", run_id, "--runs-dir", "runs", "--json", "--tasks")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def accounted(container: str, run_dir: Path, stage: str = "train") -> list[tuple[int, str, int]]:
    """Slurm's accounting of a stage's tasks: (trial, state, elapsed seconds), one per record.
    The trial comes from the array index and the plan's offset of the submission it belongs to."""
    plan = RunStore(run_dir).plan()
    nodes = {f"sf.{run_dir.name}.{n.key}": n for n in plan.nodes if n.stage == stage}
    if not nodes:
        return []
    out = alice(
        container,
        "sacct", "-X", "-n", "-P", "-S", "now-3hours", f"--name={','.join(nodes)}",
        "--format=JobID,JobName,State,ElapsedRaw",
    )  # fmt: skip
    rows = []
    for line in out.splitlines():
        job_id, name, state, elapsed = line.split("|")
        node = nodes[name]
        index = int(job_id.split("_", 1)[1]) if node.array else 0
        rows.append((node.offset + index, state.split()[0], int(elapsed or 0)))
    return rows


def settled(container: str, run_dir: Path, expected: int, timeout: float = 60) -> list[tuple[int, str, int]]:
    """The stage's accounting once it holds `expected` ended records (slurmdbd lags a little)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = accounted(container, run_dir)
        final = [r for r in rows if r[1] not in ("PENDING", "RUNNING", "REQUEUED")]
        if len(final) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def test_tpe_reaches_a_better_best_than_random_search_over_three_seeds(mini_cluster: str, workdir: Path) -> None:
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for sampler in ("tpe", "random"):
        for seed in (0, 1, 2):
            over = [f"search.seed={seed}", *FAST]
            if sampler == "random":
                over.append("search.sampler=random")
            runs[sampler, seed] = launch_json(mini_cluster, workdir, "experiment=search_demo", *over)
    monitors = [follow(mini_cluster, workdir, str(doc["run_id"])) for doc in runs.values()]
    ended(monitors, timeout=900)
    best: dict[str, list[float]] = {"tpe": [], "random": []}
    for (sampler, _seed), doc in runs.items():
        found = study(mini_cluster, workdir, str(doc["run_id"]))
        assert found["counts"]["complete"] == 40 and found["finished"] == 40, found["counts"]
        best[sampler].append(found["best"][0]["values"][0])
        rows = settled(mini_cluster, Path(str(doc["run_dir"])), 40)
        assert Counter(t for t, _s, _e in rows) == dict.fromkeys(range(40), 1)  # one task per trial
        assert {s for _t, s, _e in rows} == {"COMPLETED"}
    assert statistics.mean(best["tpe"]) < statistics.mean(best["random"]), best
    print(
        f"\nbest value, mean of 3 seeds: TPE {statistics.mean(best['tpe']):.3f}, random {statistics.mean(best['random']):.3f}"
    )


@pytest.mark.smoke
def test_the_monitor_job_alone_completes_the_study_and_a_kill_loses_nothing(mini_cluster: str, workdir: Path) -> None:
    n = 12
    # Each trial runs 16 s, so the 8 trials after the first batch need at least 32 s: far more than
    # the few seconds between seeing 4 told and the kill, even on a loaded machine.
    doc = launch_json(
        mini_cluster, workdir, "experiment=search_demo", f"search.n_trials={n}", "steps=4", "step_sleep=4"
    )
    run_id, run_dir = str(doc["run_id"]), Path(str(doc["run_dir"]))
    # The researcher's shell is back: no slurmflow process of alice's is left, 4 trials are queued.
    lingering = subprocess.run(
        ["docker", "exec", mini_cluster, "pgrep", "-u", "alice", "-f", "slurmflow (launch|monitor)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lingering.returncode == 1, lingering.stdout
    deadline = time.monotonic() + 60
    while len(first := accounted(mini_cluster, run_dir)) < 4 and time.monotonic() < deadline:
        time.sleep(1)  # slurmdbd records a submission a moment after sbatch returns
    assert sorted(t for t, _s, _e in first) == [0, 1, 2, 3]  # the first batch, and no more without a monitor

    def as_job() -> None:
        done = slurmflow(
            mini_cluster, workdir, "monitor", run_id, "--runs-dir", "runs", "--as-job", "--interval", "2",
            "--partition", "cpu",
        )  # fmt: skip
        assert done.returncode == 0 and "runs as Slurm job" in done.stdout, done.stderr

    as_job()
    deadline = time.monotonic() + 300
    while status(mini_cluster, workdir, run_id)["study"]["finished"] < 4:
        assert time.monotonic() < deadline, "the monitor job told the study nothing"
        time.sleep(2)
    # Kill the chain mid-study, whatever its link is doing (a tick may die between ask and submit).
    alice(mini_cluster, "scancel", f"--name=sf.{run_id}.monitor")
    deadline = time.monotonic() + 60
    while alice(mini_cluster, "squeue", "--noheader", f"--name=sf.{run_id}.monitor").strip():
        assert time.monotonic() < deadline, "the monitor job outlived scancel"
        time.sleep(1)
    mid = status(mini_cluster, workdir, run_id)["study"]
    assert mid["finished"] < n, "the study ended before the kill: nothing was interrupted"

    as_job()  # started again: it finds what the killed one left and goes on
    deadline = time.monotonic() + 600
    while not (st := status(mini_cluster, workdir, run_id))["done"]:
        assert time.monotonic() < deadline, st["study"]
        time.sleep(3)
    found = st["study"]
    assert found["counts"] == {"complete": n, "running": 0, "pruned": 0, "failed": 0, "waiting": 0}
    assert sorted(h["trial"] for h in found["history"]) == list(range(n))  # every trial told once
    rows = settled(mini_cluster, run_dir, n)
    assert Counter(t for t, _s, _e in rows) == dict.fromkeys(range(n), 1), rows  # none lost, none twice
    assert {s for _t, s, _e in rows} == {"COMPLETED"}
    events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("search_done") == 1 and events.count("monitor_job") >= 2


def test_pruning_frees_task_time_and_a_pruned_trial_is_no_failure(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "prune_it.yaml").write_text(PRUNE)
    on = launch_json(mini_cluster, workdir, "experiment=prune_it")
    off = launch_json(mini_cluster, workdir, "experiment=prune_it", "search.pruner=nop")
    ended([follow(mini_cluster, workdir, str(d["run_id"])) for d in (on, off)], timeout=600)
    seconds = {}
    for name, doc in (("on", on), ("off", off)):
        run_id, run_dir = str(doc["run_id"]), Path(str(doc["run_dir"]))
        rows = settled(mini_cluster, run_dir, 16)
        assert Counter(t for t, _s, _e in rows) == dict.fromkeys(range(16), 1)
        seconds[name] = sum(e for _t, _s, e in rows)
        st = status(mini_cluster, workdir, run_id)
        pruned = {r["trial"] for r in st["tasks"] if r["state"] == "PRUNED"}
        accounting = {t: s for t, s, _e in rows}
        if name == "off":
            assert not pruned and set(accounting.values()) == {"COMPLETED"}
        else:
            assert pruned, "the pruner stopped nothing"
            assert {accounting[t] for t in pruned} == {"CANCELLED"}  # Slurm: cancelled; slurmflow: PRUNED
            assert {r["slurm_state"] for r in st["tasks"] if r["state"] == "PRUNED"} == {"CANCELLED"}
            assert st["study"]["counts"]["pruned"] == len(pruned)
            assert all(accounting[t] == "COMPLETED" for t in set(range(16)) - pruned)
        train = next(s for s in st["stages"] if s["stage"] == "train")
        assert not train["failures"], train
        # The handler (after_not_ok: [train]) never ran: skipped, and nothing of it reached Slurm.
        assert "handler" in st["skipped"], st["skipped"]
        handler = alice(mini_cluster, "sacct", "-X", "-n", "-S", "now-3hours", f"--name=sf.{run_id}.handler")
        assert handler.strip() == ""
        assert not any(a["event"] in ("requeued", "gave_up") for a in st["actions"])  # no retry either
    assert seconds["on"] < seconds["off"], seconds
    print(f"\ntask-seconds of 16 trials: pruned {seconds['on']} s, unpruned {seconds['off']} s")
