"""From a finished campaign to an answer, on the mini cluster: the demo with one trial made to fail
and one requeued by the monitor. `results` is checked against the jobs' own files and Slurm's
accounting, `report` in a headless browser, `track` against a real MLflow SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_launch import REPO, launch_json, sacct, slurmflow, workdir
from tests.integration.test_monitor import monitor_until_done

pytestmark = pytest.mark.integration
__all__ = ["workdir"]
ARTIFACTS = REPO / "tests" / "artifacts"

# Trial 1 (seed=1) fails for good (exit 3); trial 2 (seed=2) fails on its first attempt with an
# exit code the stage's retry policy retries (75), so the monitor requeues it (same job id; Slurm
# sets SLURM_RESTART_COUNT only from the first requeue on).
FAULTS = '(test ${seed} != 1 || exit 3) && (test -n "$SLURM_RESTART_COUNT" || test ${seed} != 2 || exit 75) && '


def faulty_demo(workdir: Path) -> None:
    demo = (workdir / "configs" / "experiment" / "demo.yaml").read_text()
    demo = demo.replace("    command: python jobs/train.py", f"    command: {FAULTS}python jobs/train.py", 1)
    demo = demo.replace("    retry: {infra: 2}", "    retry: {infra: 2, exit_codes: [75], exit_retries: 1}", 1)
    assert FAULTS in demo and "exit_codes: [75]" in demo
    (workdir / "configs" / "experiment" / "faulty.yaml").write_text(demo.replace("name: demo", "name: faulty"))


def sacct_attempts(container: str, job_ids: list[str]) -> dict[str, int]:
    """Task id -> the attempts Slurm's accounting keeps of it that started (`sacct --duplicates`)."""
    counts: dict[str, int] = {}
    for job, start in sacct(container, job_ids, "JobID,Start"):
        if start not in ("", "Unknown", "None"):
            counts[job] = counts.get(job, 0) + 1
    return counts


def final_metrics(trial: Path, stage: str) -> dict[str, float]:
    """A stage's final values as its files hold them (the last summary record of its last attempt)."""
    out: dict[str, float] = {}
    files = sorted((trial / "metrics").glob(f"{stage}.*.jsonl"), key=lambda p: p.read_text().split('"t":', 1)[1][:20])
    for f in files:
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            out.update(rec.get("final", {}))
    return out


@pytest.mark.smoke
def test_results_report_and_track_of_a_campaign_with_a_failure_and_a_requeue(
    mini_cluster: str, workdir: Path, tmp_path: Path
) -> None:
    faulty_demo(workdir)
    # 8 epochs of 0.25 s: each training runs past a second (sacct counts whole seconds; GPU-hours > 0).
    doc = launch_json(
        mini_cluster,
        workdir,
        "experiment=faulty",
        "seed=range(3)",
        "model.lr=0.3",
        "model.epochs=8",
        "model.epoch_sleep=0.25",
    )
    run_id, run_dir = str(doc["run_id"]), Path(str(doc["run_dir"]))
    actions = monitor_until_done(mini_cluster, workdir, run_id, timeout=400)
    assert any(a["event"] == "requeued" for a in actions), actions

    # Accounting records a job a few seconds after it ends: read until it shows trial 2's two attempts.
    deadline = time.monotonic() + 60
    while True:
        done = slurmflow(mini_cluster, workdir, "results", run_id, "--runs-dir", "runs", "--json")
        assert done.returncode == 0, done.stderr
        res: dict[str, Any] = json.loads(done.stdout)
        by_trial = {r["trial"]: r for r in res["trials"]}
        if (by_trial[2]["retries"] >= 1 and by_trial[2]["state"] == "COMPLETED") or time.monotonic() > deadline:
            break
        time.sleep(2)
    rows = {r["trial"]: r for r in res["trials"]}
    assert res["runs"][0]["times_from"] == "accounting"
    # Ranked by the objective (test_accuracy, max): the two finished trials, best first; the failed one unranked.
    ranked = [r for r in res["trials"] if r["rank"] is not None]
    assert [r["trial"] for r in ranked] == sorted((0, 2), key=lambda i: -rows[i]["test_accuracy"])
    assert rows[1]["state"] == "FAILED" and rows[1]["rank"] is None and rows[1].get("test_accuracy") is None
    assert rows[2]["retries"] == 1 and rows[0]["retries"] == 0, rows
    for i in (0, 2):  # figures equal the jobs' own files: eval.json (picked up) and train's summary
        trial = run_dir / "trials" / str(i)
        assert rows[i]["test_accuracy"] == json.loads((trial / "eval.json").read_text())["test_accuracy"]
        assert rows[i]["accuracy"] == final_metrics(trial, "train")["accuracy"]
        assert rows[i]["param.seed"] == str(i)
        assert rows[i]["gpu_hours_allocated"] > 0  # one GPU per training, from AllocTRES
    assert res["runs"][0]["best"]["trial"] == ranked[0]["trial"]

    # The HTML report: one bar per task attempt that ran, one row per trial, no console error.
    done = slurmflow(mini_cluster, workdir, "report", run_id, "--runs-dir", "runs", "--json")
    assert done.returncode == 0, done.stderr
    html = Path(json.loads(done.stdout)["report"])
    ids = [str(v) for v in doc["nodes"].values()]
    attempts = sacct_attempts(mini_cluster, ids)
    assert attempts[f"{doc['nodes']['train.0']}_2"] == 2  # the requeued task ran twice
    from tests.browser import open_report

    ARTIFACTS.mkdir(exist_ok=True)
    page = open_report(html, ARTIFACTS / "report-mini-cluster.png")
    assert page.console_errors == []
    assert page.gantt_running == sum(attempts.values()), (page.gantt_running, attempts)
    assert page.table_rows == 3 and page.states == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}
    assert page.fetched == [] and page.gantt_ink > 0.01 * page.gantt_area  # drawn, from the file alone

    # MLflow: a real SQLite store, read back with MlflowClient.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    via = f"docker exec -i -u alice {mini_cluster}"
    track = [sys.executable, "-m", "slurmflow", "track", str(run_dir), "--uri", uri, "--via", via, "--json"]
    first = subprocess.run(track, capture_output=True, text=True, check=False, timeout=300)
    assert first.returncode == 0, first.stderr
    client = MlflowClient(tracking_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "faulty"]
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["slurmflow.trial"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and sorted(children) == ["0", "1", "2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children.values())
    assert parents[0].data.params["model.lr"] == "0.3"  # the launch's own overrides: the campaign's params
    for key in ("0", "2"):
        trial = run_dir / "trials" / key
        assert children[key].data.params["seed"] == key
        got = children[key].data.metrics
        assert got["test_accuracy"] == json.loads((trial / "eval.json").read_text())["test_accuracy"]
        assert got["accuracy"] == final_metrics(trial, "train")["accuracy"]
    assert children["1"].info.status == "FAILED"
    history = client.get_metric_history(children["0"].info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 9))

    before = (len(client.search_runs([exp.experiment_id])), len(history))
    again = subprocess.run(track, capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0, again.stderr
    after = (
        len(client.search_runs([exp.experiment_id])),
        len(client.get_metric_history(children["0"].info.run_id, "loss")),
    )
    assert after == before
