"""A real `@hydra.main` app (jobs/hydra_app/train.py) on the mini cluster, run by alice inside it as
on a login node: swept through `hydra/launcher=slurmflow` (the command returns while every task is
still held in Slurm's queue), with `wait=true` (the apps' return values come back), and as the
train stage of a pipeline with an after_corr eval. Outcomes are read from Slurm and from what the
jobs wrote."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, launch_json, slurmflow, wait_final, workdir

pytestmark = pytest.mark.integration
__all__ = ["workdir"]  # the fixture, shared with test_launch
PYTHON = "/opt/slurmflow/venv/bin/python"
SWEEP = ("lr=0.1,0.01", "seed=range(3)")


def as_alice(
    container: str, workdir: Path | None, *argv: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    where = ["-w", str(workdir)] if workdir is not None else []
    return subprocess.run(
        ["docker", "exec", "-u", "alice", *where, container, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status(container: str, workdir: Path, run_dir: Path) -> dict[str, Any]:
    done = slurmflow(container, workdir, "status", str(run_dir), "--json", "--tasks")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def plugin_run(container: str, workdir: Path, app: str, *args: str) -> Path:
    """`python APP -m hydra/launcher=slurmflow ARGS` as alice (a bare `k=v` is a launcher
    parameter, hydra.launcher.k=v; the rest are the app's overrides): the run directory it names."""
    params = [f"hydra.launcher.{a}" if a.split("=")[0] in LAUNCHER else a for a in args]
    done = as_alice(container, workdir, PYTHON, app, "-m", "hydra/launcher=slurmflow", *params)
    assert done.returncode == 0, done.stderr
    found = re.search(r"slurmflow status (\S+)`", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return Path(found.group(1))


LAUNCHER = {"hold", "timeout_min", "mem_gb", "signal_delay_s", "max_num_timeout"}


def submitted(run_dir: Path) -> list[str]:
    """The job ids the run's event log records as submitted."""
    ids = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "submitted":
            ids.append(str(event["job_id"]))
    assert ids, "nothing submitted"
    return ids


def test_the_plugin_submits_and_returns_before_any_task_runs(mini_cluster: str, workdir: Path) -> None:
    run_dir = plugin_run(
        mini_cluster, workdir, "jobs/hydra_app/train.py", "hold=true", "timeout_min=5", "mem_gb=1", *SWEEP
    )
    ids = submitted(run_dir)
    # The launching process has exited; Slurm holds every task: none has run.
    queued = backend(mini_cluster).query(ids).by_id()
    tasks = [j for j in queued.values() if j.array_task_id is not None]
    assert len(tasks) == 6 and all(j.state is JobState.PENDING for j in tasks), queued
    assert all("JobHeldUser" in (j.reason or "") for j in tasks), [j.reason for j in tasks]
    for job in ids:
        release = as_alice(mini_cluster, workdir, "scontrol", "release", job)
        assert release.returncode == 0, release.stderr
    final = wait_final(mini_cluster, ids)
    assert sorted(j.state.name for j in final.values() if j.array_task_id is not None) == ["COMPLETED"] * 6

    doc = status(mini_cluster, workdir, run_dir)
    assert [(s["stage"], s["counts"]) for s in doc["stages"]] == [("train", {"COMPLETED": 6})]
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    (sweep_dir,) = (workdir / "multirun").glob("*/*")
    assert (sweep_dir / "multirun.yaml").is_file()
    for t in trials:
        out = sweep_dir / str(t["index"])
        assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == t["overrides"]
        hydra_cfg = yaml.safe_load((out / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["num"] == t["index"]
        assert re.fullmatch(r"\d+_\d+", str(hydra_cfg["job"]["id"]))  # the Slurm array task
        result = json.loads((out / "result.json").read_text())
        assert [f"lr={result['lr']}", f"seed={result['seed']}"] == t["overrides"]


# The smoke test of the matrix goes through Hydra's API, not an app's command line: on Slurm
# 26.05's image (Python 3.14) every released Hydra's @hydra.main fails in argparse before any
# launcher is reached (facebookresearch/hydra#3121); the launcher itself works there.
@pytest.mark.smoke
def test_wait_true_returns_the_apps_values(mini_cluster: str, workdir: Path) -> None:
    driver = workdir / "jobs" / "hydra_app" / "multirun_driver.py"
    driver.write_text((Path(__file__).resolve().parents[1] / "fixtures" / "hydra_multirun.py").read_text())
    subprocess.run(["chown", "2001:2001", str(driver)], check=True)
    done = as_alice(
        mini_cluster,
        workdir,
        PYTHON,
        str(driver),
        str(workdir / "jobs" / "hydra_app"),
        "hydra/launcher=slurmflow",
        "hydra.launcher.wait=true",
        "hydra.launcher.poll_s=1",
        "hydra.launcher.timeout_min=5",
        *SWEEP,
    )
    assert done.returncode == 0, done.stderr
    returned = json.loads(done.stdout.strip().splitlines()[-1])
    (sweep_dir,) = (workdir / "multirun").glob("*/*")
    results = [json.loads((sweep_dir / str(i) / "result.json").read_text()) for i in range(6)]
    assert returned == [[[f"lr={r['lr']}", f"seed={r['seed']}"], "COMPLETED", r["loss"]] for r in results]


def _times(container: str, ids: list[str]) -> dict[str, tuple[datetime, datetime]]:
    done = as_alice(container, None, "sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(ids))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    times = {}
    for line in out.splitlines():
        job, start, end = line.split("|")
        times[job] = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    return times


def test_the_app_as_a_pipeline_stage_with_an_after_corr_eval(mini_cluster: str, workdir: Path) -> None:
    doc = launch_json(mini_cluster, workdir, "-m", "experiment=hydra_app")
    nodes: dict[str, str] = doc["nodes"]
    run_dir = Path(str(doc["run_dir"]))
    assert list(nodes) == ["train.0", "eval.0", "collect"]
    final = wait_final(mini_cluster, list(nodes.values()))
    assert all(j.state is JobState.COMPLETED for j in final.values()), {k: v.state.name for k, v in final.items()}
    # after_corr, from Slurm's accounting: each trial's eval starts after its own training ended.
    deadline = time.monotonic() + 60
    while True:  # sacct's end times can trail squeue by a moment
        times = _times(mini_cluster, list(nodes.values()))
        if len(times) == 13:
            break
        assert time.monotonic() < deadline, times
        time.sleep(1)
    for i in range(6):
        assert times[f"{nodes['eval.0']}_{i}"][0] >= times[f"{nodes['train.0']}_{i}"][1]
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    for t in trials:
        trial = run_dir / "trials" / str(t["index"])
        app_overrides = yaml.safe_load((trial / "train" / ".hydra" / "overrides.yaml").read_text())
        assert app_overrides == [*t["overrides"], "epochs=5"]
        assert json.loads((trial / "eval.json").read_text())["overrides"] == app_overrides
    rows = json.loads((run_dir / "results.json").read_text())
    assert sorted(r["trial"] for r in rows) == list(range(6))


def test_max_num_timeout_requeues_a_job_warned_of_its_time_limit(mini_cluster: str, workdir: Path) -> None:
    """As with the submitit launcher: the warning comes signal_delay_s before the limit and the
    job is requeued (same job id) up to max_num_timeout times. Slurm checks for warnings every
    30 s, so with a 2-minute limit and 60 s the warning falls 30 to 60 s into the attempt."""
    app = workdir / "timeout_app.py"
    app.write_text((Path(__file__).resolve().parents[1] / "fixtures" / "hydra_timeout" / "app.py").read_text())
    subprocess.run(["chown", "2001:2001", str(app)], check=True)
    run_dir = plugin_run(
        mini_cluster, workdir, str(app), "timeout_min=2", "signal_delay_s=60", "max_num_timeout=1", "+x=1,2"
    )
    ids = submitted(run_dir)
    final = wait_final(mini_cluster, ids, timeout=300)
    tasks = {j.job_id: j for j in final.values() if j.array_task_id is not None}
    assert sorted(j.state.name for j in tasks.values()) == ["COMPLETED", "COMPLETED"]
    assert all((j.restarts or 0) == 1 for j in tasks.values()), {k: j.restarts for k, j in tasks.items()}
    (sweep_dir,) = (workdir / "multirun").glob("*/*")
    for num in (0, 1):
        assert (sweep_dir / str(num) / "attempts").read_text().split() == ["0", "1"]
