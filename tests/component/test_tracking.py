"""MLflow tracking of a real campaign (the results fixture on the local engine), read back with
MLflow's own client: one parent, a child per trial with its overrides, metrics, curve, status and
files; a second call logs nothing; a call during the campaign logs only what is new; the monitor's
tick tracks a run whose experiment asks for it, and a tracker that fails never fails the tick."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from slurmflow.backends import FakeSlurm
from slurmflow.model import Stage, StageDep, Trial
from slurmflow.monitoring.monitor import tick
from slurmflow.planning import planner
from slurmflow.results import tracking
from slurmflow.results.collect import RunResults, collect
from slurmflow.run import schedulers
from slurmflow.run.launch import context
from slurmflow.run.submitter import submit
from slurmflow.rundir.store import RunStore, plan_to_dict
from slurmflow.slurm.types import DepKind

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_exp"
LAUNCH_TIMEOUT_S = 120


def job_module() -> ModuleType:
    """The fixture's job.py: the formula its metrics come from."""
    spec = importlib.util.spec_from_file_location("results_exp_job", FIXTURE / "job.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(where: Path, extra_config: str = "") -> RunStore:
    """Copy the fixture to `where` and run it to its end on the local engine (launch waits)."""
    shutil.copytree(FIXTURE, where)
    if extra_config:
        with open(where / "config.yaml", "a") as f:
            f.write(extra_config)
    cmd = [sys.executable, "-m", "slurmflow", "launch", "--backend", "local", "-cd", ".", "--runs-dir", "runs"]
    done = subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: the campaign has failed trials
    (run_dir,) = [p for p in (where / "runs").iterdir() if (p / "plan.json").is_file()]
    return RunStore(run_dir)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunResults]:
    store = launch(tmp_path_factory.mktemp("campaign") / "exp")
    yield collect(store, schedulers.of_run(store))


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (a new one costs seconds of migrations); each test logs
    to an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def exp(request: pytest.FixtureRequest) -> str:
    return str(request.node.name)


def runs_of(client: MlflowClient, experiment: str) -> list[Run]:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return sorted(out)


def snapshot(client: MlflowClient, experiment: str) -> dict[str, tuple[str, int, list[str]]]:
    """Per run: its status, how many metric points it holds, its files."""
    out = {}
    for r in runs_of(client, experiment):
        n = sum(len(client.get_metric_history(r.info.run_id, m)) for m in r.data.metrics)
        out[r.info.run_id] = (r.info.status, n, artifacts(client, r.info.run_id))
    return out


def manifest(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "trials.jsonl").read_text().splitlines()]


def test_the_campaign_is_one_parent_with_a_child_per_trial(campaign: RunResults, store_uri: str, exp: str) -> None:
    done = tracking.track(campaign, uri=store_uri, experiment=exp)
    assert (done.runs_created, done.runs_updated) == (5, 0)
    client = MlflowClient(store_uri)
    runs = runs_of(client, exp)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_name for p in parents] == [campaign.run_id]
    parent = parents[0]
    assert parent.info.run_id == done.parent_run_id
    assert parent.data.tags["slurmflow.run_id"] == campaign.run_id
    assert parent.data.tags["slurmflow.objective"] == "test_accuracy:max"
    assert parent.data.tags["slurmflow.slurm_version"] == "local"
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["0", "1", "2", "3"]
    job = job_module()
    for trial in manifest(campaign.root):
        child = children[str(trial["index"])]
        assert child.data.params == dict(o.split("=", 1) for o in trial["overrides"])
        assert child.data.tags["slurmflow.trial_id"] == trial["id"]
        lr, seed = float(child.data.params["lr"]), int(child.data.params["seed"])
        files = artifacts(client, child.info.run_id)
        assert "config.yaml" in files and f"logs/train.0/{trial['index']}.out" in files
        if seed == 3:  # the fixture's failing seed: train exits 3, eval never runs
            assert child.info.status == "FAILED"
            assert child.data.tags["slurmflow.state"] == "FAILED"
            assert child.data.metrics == {}
            continue
        assert child.info.status == "FINISHED"
        assert child.data.metrics == {
            "test_accuracy": job.accuracy(lr, seed),
            "train_accuracy": job.accuracy(lr, seed) - 0.01,
            "loss": round(1.0 / (1 + 4 * lr), 6),
        }
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(e, round(1.0 / (1 + e * lr), 6)) for e in range(5)]
        assert f"logs/eval.0/{trial['index']}.out" in files
        assert child.data.tags["slurmflow.job.train"].endswith(f"_{trial['index']}")
    assert parent.info.status == "FAILED"  # two of its trials failed


def test_a_second_call_logs_nothing(campaign: RunResults, store_uri: str, exp: str) -> None:
    tracking.track(campaign, uri=store_uri, experiment=exp)
    client = MlflowClient(store_uri)
    before = snapshot(client, exp)
    again = tracking.track(campaign, uri=store_uri, experiment=exp)
    assert (again.runs_created, again.runs_updated, again.metrics_logged, again.artifacts_logged) == (0, 0, 0, 0)
    assert again.params_logged == 0
    assert snapshot(client, exp) == before


def test_a_call_while_the_campaign_runs_logs_only_what_is_new(campaign: RunResults, store_uri: str, exp: str) -> None:
    """Earlier in the campaign: trials 0 and 2 at epoch 2 of train, the others not started."""
    early = []
    for t in campaign.trials:
        if t.state != "COMPLETED":
            continue
        curve = {s: v for s, v in t.curves["loss"].items() if s <= 2}
        tasks = tuple(replace(task, state="RUNNING") for task in t.tasks)
        early.append(
            replace(t, state="RUNNING", curves={"loss": curve}, metrics={"loss": curve[2]}, tasks=tasks, rank=None)
        )
    singles = tuple(s if s.stage == "prep" else replace(s, state="PENDING") for s in campaign.singles)
    first = tracking.track(replace(campaign, trials=tuple(early), singles=singles), uri=store_uri, experiment=exp)
    assert (first.runs_created, first.metrics_logged) == (3, 6)
    client = MlflowClient(store_uri)
    assert {r.info.run_name: r.info.status for r in runs_of(client, exp)} == {
        "0": "RUNNING",
        "2": "RUNNING",
        campaign.run_id: "RUNNING",
    }

    later = tracking.track(campaign, uri=store_uri, experiment=exp)
    # Two new trials; for each running one two more loss steps and the two accuracies.
    assert (later.runs_created, later.runs_updated, later.metrics_logged) == (2, 3, 8)
    assert tracking.track(campaign, uri=store_uri, experiment=exp).metrics_logged == 0
    for r in runs_of(client, exp):
        if r.info.run_name in ("0", "2"):
            assert r.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == [0, 1, 2, 3, 4]


def test_the_monitor_tracks_a_run_whose_experiment_asks(tmp_path: Path, store_uri: str, exp: str) -> None:
    """`tracking: {mlflow: ...}` with a path relative to where the campaign was launched (the
    monitor runs elsewhere)."""
    relative = os.path.relpath(store_uri.removeprefix("sqlite:///"), tmp_path / "exp")
    store = launch(tmp_path / "exp", f"tracking: {{mlflow: {{uri: 'sqlite:///{relative}', experiment: {exp}}}}}\n")
    cmd = [sys.executable, "-m", "slurmflow", "monitor", str(store.root), "--once"]
    for _ in range(2):  # the second tick finds the campaign tracked to its end and logs nothing
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "mlflow" not in done.stdout.lower(), done.stdout
    assert json.loads(store.path(tracking.STATE_FILE).read_text())["final"] is True
    statuses = sorted(r.info.status for r in runs_of(MlflowClient(store_uri), exp))
    assert statuses == ["FAILED", "FAILED", "FAILED", "FINISHED", "FINISHED"]


def fake_run(tmp: Path, fake: FakeSlurm, uri: str, experiment: str) -> RunStore:
    stages = {
        "train": Stage("train", command="t", per_trial=True),
        "eval": Stage("eval", command="e", per_trial=True, deps=(StageDep(DepKind.AFTER_CORR, "train"),)),
    }
    plan = planner.plan("m", stages, 3, fake.cluster_info())
    store = RunStore.create(tmp / "runs", "m-1")
    store.write_json("plan.json", plan_to_dict(plan))
    store.write_manifest(Trial(i, f"t{i}", (f"lr={i}",)) for i in range(3))
    launch_doc = {"python": "python3", "cwd": str(tmp), "config_name": "c", "base_overrides": ["+x@y=1"]}
    store.write_json("launch.json", {**launch_doc, "tracking": {"mlflow": {"uri": uri, "experiment": experiment}}})
    submit(plan, fake, store, context(store))
    return store


def test_the_tick_tracks_on_slurm_and_a_failure_never_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_uri: str, exp: str
) -> None:
    fake = FakeSlurm()
    store = fake_run(tmp_path, fake, store_uri, exp)
    first = tick(store, fake)  # tracks at once: nothing tracked yet
    assert not first.done and not first.actions
    client = MlflowClient(store_uri)
    assert {r.info.status for r in runs_of(client, exp)} == {"RUNNING"}

    def down(*_a: object, **_k: object) -> tracking.Tracked:
        raise ConnectionError("tracking server\nis down")

    monkeypatch.setattr(tracking, "track", down)
    for _ in range(20):
        fake.advance(5)
    ended = tick(store, fake)
    assert ended.done  # a failed tracker holds nothing back
    assert [(a.kind, a.task, a.why) for a in ended.actions] == [
        ("action_failed", "mlflow", "MLflow tracking failed: ConnectionError: tracking server is down")
    ]
    assert not tick(store, fake).actions  # said once
    monkeypatch.undo()
    assert not tick(store, fake).actions
    runs = runs_of(client, exp)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    parent = next(r for r in runs if r.info.run_name == "m-1")
    assert parent.data.params == {"x_y": "1"}  # Hydra's `+` dropped, `@` made a key MLflow accepts
    assert json.loads(store.path(tracking.STATE_FILE).read_text())["final"] is True
