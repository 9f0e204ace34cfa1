"""`slurmflow results`, `runs` and `status --gantt` on runs of the local engine: the fixture
campaign (tests/fixtures/results_exp: 4 trials, the seed=3 ones fail in train), whose metrics are
a formula of the trial's parameters, so every figure is checked against what the job computed."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_exp"


def accuracy(lr: float, seed: int) -> float:  # tests/fixtures/results_exp/job.py
    return round(0.5 + lr + seed / 100, 6)


def sf(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slurmflow", *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results") / "p"
    shutil.copytree(FIXTURE, path)
    for extra in ([], ["lr=0.5", "seed=2"]):
        done = sf(path, "launch", "--backend", "local", "-cd", ".", "--runs-dir", "runs", *extra)
        assert done.returncode in (0, 1), done.stderr  # 1: a task failed, as the first campaign means to
    return path


def runs_of(project: Path) -> list[str]:
    return sorted(
        (p.name for p in (project / "runs").iterdir() if p.is_dir()),
        key=lambda n: (project / "runs" / n).stat().st_mtime,
    )


def results(project: Path, *args: str) -> dict[str, Any]:
    done = sf(project, "results", *args, "--runs-dir", "runs", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_trials_are_ranked_by_the_objective_and_failures_shown(project: Path) -> None:
    first = runs_of(project)[0]
    doc = results(project, first)
    rows = doc["trials"]
    assert doc["runs"][0]["times_from"] == "local engine"
    assert [(r["param.lr"], r["param.seed"], r["rank"]) for r in rows[:2]] == [("0.3", "2", 1), ("0.1", "2", 2)]
    for r in rows[:2]:
        assert r["state"] == "COMPLETED"
        assert r["test_accuracy"] == accuracy(float(r["param.lr"]), int(r["param.seed"]))  # eval.json, picked up
        assert r["train_accuracy"] == pytest.approx(r["test_accuracy"] - 0.01)  # summary()
        assert r["loss"] == round(1.0 / (1 + 4 * float(r["param.lr"])), 6)  # the curve's last step
        assert r["elapsed_s"] > 0 and r["retries"] == 0
    assert {(r["param.seed"], r["state"], r["rank"]) for r in rows[2:]} == {("3", "FAILED", None)}
    assert doc["runs"][0]["best"]["overrides"] == ["lr=0.3", "seed=2"]
    assert doc["runs"][0]["states"] == {"COMPLETED": 2, "FAILED": 2}


def test_filters_csv_and_runs_side_by_side(project: Path) -> None:
    first, second = runs_of(project)
    assert [r["trial"] for r in results(project, first, "--where", "state=FAILED")["trials"]] == [1, 3]
    assert len(results(project, first, "--where", "test_accuracy>0.7", "--where", "lr=0.3")["trials"]) == 1
    assert [r["rank"] for r in results(project, first, "--top", "1")["trials"]] == [1]
    assert results(project, first, "--objective", "loss:min")["trials"][0]["param.lr"] == "0.3"
    done = sf(project, "results", first, "--runs-dir", "runs", "--csv")
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(table) == 4 and table[0]["param.lr"] == "0.3" and float(table[0]["test_accuracy"]) == accuracy(0.3, 2)
    both = results(project, first, second)
    assert both["columns"][0] == "run"
    assert (both["trials"][0]["run"], both["trials"][0]["param.lr"]) == (second, "0.5")  # the best of both
    bad = sf(project, "results", first, "--runs-dir", "runs", "--where", "acuracy>1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no column 'acuracy'" in bad.stderr


def test_runs_lists_each_run_with_its_best(project: Path) -> None:
    done = sf(project, "runs", "--runs-dir", "runs", "--json")
    assert done.returncode == 0, done.stderr
    listed = {r["run_id"]: r for r in json.loads(done.stdout)}
    first, second = runs_of(project)
    assert listed[first]["best"] == accuracy(0.3, 2) and listed[first]["trials"] == 4
    assert listed[second]["best"] == accuracy(0.5, 2) and listed[second]["size_bytes"] > 0
    text = sf(project, "runs", "--runs-dir", "runs")
    assert text.returncode == 0 and first in text.stdout


def test_status_gantt_draws_a_row_per_task(project: Path) -> None:
    first = runs_of(project)[0]
    done = sf(project, "status", first, "--runs-dir", "runs", "--gantt")
    assert done.returncode == 0, done.stderr
    for label in ("prep", "train[0]", "eval[3]", "collect"):
        assert label in done.stdout, done.stdout
