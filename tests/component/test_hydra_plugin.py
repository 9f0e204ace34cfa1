"""A plain Hydra app (jobs/hydra_app) through `hydra/launcher=slurmflow` and as a pipeline stage,
on the local engine: real processes, no Slurm. The same scenarios run on the mini cluster in
tests/integration/test_hydra.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SLURMFLOW = str(Path(sys.executable).with_name("slurmflow"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    return tmp_path


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("SLURMFLOW_")}
    out["HYDRA_FULL_ERROR"] = "1"
    return out


def run(cwd: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False)


def status(run_dir: Path) -> dict[str, Any]:
    done = run(run_dir.parent, SLURMFLOW, "status", str(run_dir), "--json", "--tasks")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait_done(run_dir: Path, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = status(run_dir)
        if doc["done"]:
            return doc
        assert time.monotonic() < deadline, f"run not done after {timeout} s: {doc['stages']}"
        time.sleep(0.5)


def launched_run(output: str) -> Path:
    found = re.search(r"slurmflow status (\S+)`", output)
    assert found, output
    return Path(found.group(1))


SWEEP = ("lr=0.1,0.01", "seed=range(3)")


def test_a_sweep_through_the_plugin_returns_and_each_job_writes_its_own_hydra_dir(project: Path) -> None:
    app = project / "jobs" / "hydra_app" / "train.py"
    done = run(
        project, sys.executable, str(app), "-m", "hydra/launcher=slurmflow", "hydra.launcher.backend=local", *SWEEP
    )
    assert done.returncode == 0, done.stderr
    run_dir = launched_run(done.stdout + done.stderr)
    doc = wait_done(run_dir)
    assert [(s["stage"], s["counts"]) for s in doc["stages"]] == [("train", {"COMPLETED": 6})]
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert [t["overrides"] for t in trials] == [[f"lr={lr}", f"seed={s}"] for lr in ("0.1", "0.01") for s in range(3)]
    (sweep_dir,) = (project / "multirun").glob("*/*")
    assert (sweep_dir / "multirun.yaml").is_file()
    # The jobs composed from the run's snapshot of the app's config directory.
    assert json.loads((run_dir / "launch.json").read_text())["hydra_app"]["snapshot"]
    assert (run_dir / "config" / "config.yaml").read_text() == (
        project / "jobs" / "hydra_app" / "conf" / "config.yaml"
    ).read_text()
    for t in trials:
        job = sweep_dir / str(t["index"])  # Hydra's own layout: hydra.sweep.dir/hydra.sweep.subdir
        assert yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) == t["overrides"]
        hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["job"]["num"] == t["index"] and hydra_cfg["mode"] == "MULTIRUN"
        result = json.loads((job / "result.json").read_text())
        assert [f"lr={result['lr']}", f"seed={result['seed']}"] == t["overrides"]
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["lr"] == result["lr"]


def multirun_waiting(project: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """The app's sweep through Hydra's API with wait=true on the local engine
    (tests/fixtures/hydra_multirun.py prints what the launcher returned)."""
    driver = REPO / "tests" / "fixtures" / "hydra_multirun.py"
    app_dir = project / "jobs" / "hydra_app"
    launcher = ("hydra/launcher=slurmflow", "hydra.launcher.backend=local", "hydra.launcher.wait=true")
    return run(project, sys.executable, str(driver), str(app_dir), *launcher, "hydra.launcher.poll_s=0.5", *overrides)


def test_wait_true_returns_the_apps_return_values(project: Path) -> None:
    done = multirun_waiting(project, *SWEEP)
    assert done.returncode == 0, done.stderr
    returned = json.loads(done.stdout.strip().splitlines()[-1])
    (sweep_dir,) = (project / "multirun").glob("*/*")
    results = [json.loads((sweep_dir / str(i) / "result.json").read_text()) for i in range(6)]
    assert returned == [[[f"lr={r['lr']}", f"seed={r['seed']}"], "COMPLETED", r["loss"]] for r in results]


def test_a_failed_job_comes_back_as_hydra_raises_it(project: Path) -> None:
    app_dir = project / "jobs" / "hydra_app"
    # epochs=-1: the app's config is fine, the app itself raises in the job.
    (app_dir / "train.py").write_text(
        (app_dir / "train.py")
        .read_text()
        .replace("    loss = loss_after(", "    assert cfg.epochs >= 0, 'epochs < 0'\n    loss = loss_after(")
    )
    done = multirun_waiting(project, "epochs=1,-1")
    assert done.returncode != 0
    assert "AssertionError: epochs < 0" in done.stderr


def test_a_bad_launcher_parameter_is_one_line_and_submits_nothing(project: Path) -> None:
    app = project / "jobs" / "hydra_app" / "train.py"
    done = run(
        project,
        sys.executable,
        str(app),
        "-m",
        "hydra/launcher=slurmflow",
        "hydra.launcher.backend=local",
        "hydra.launcher.nodes=2",
        "lr=0.1,0.2",
    )
    assert done.returncode == 1
    assert "slurmflow: hydra.launcher.nodes=2: slurmflow runs a Hydra job as one task on one node" in done.stderr
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())
    # An unknown key: refused by the sweeper's check (one composition), before anything is written.
    done = run(
        project, sys.executable, str(app), "-m", "hydra/launcher=slurmflow", "hydra.launcher.backend=local", "sed=1,2"
    )
    assert done.returncode == 1 and "Could not override 'sed'" in done.stderr
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())


def test_the_app_as_a_stage_of_a_pipeline(project: Path) -> None:
    done = run(project, SLURMFLOW, "launch", "-m", "experiment=hydra_app", "--backend", "local", "--json")
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    doc = status(run_dir)
    assert [(s["stage"], s["counts"]) for s in doc["stages"]] == [
        ("train", {"COMPLETED": 6}),
        ("eval", {"COMPLETED": 6}),
        ("collect", {"COMPLETED": 1}),
    ]
    assert (run_dir / "multirun.yaml").is_file()
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    for t in trials:
        trial = run_dir / "trials" / str(t["index"])
        # The trial's own .hydra (the experiment's overrides) and the app's (its output directory).
        assert yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()) == [
            "experiment=hydra_app",
            *t["overrides"],
        ]
        assert yaml.safe_load((trial / "train" / ".hydra" / "overrides.yaml").read_text()) == [
            *t["overrides"],
            "epochs=5",
        ]
        resolved = yaml.safe_load((trial / "config.yaml").read_text())
        assert "sweep" not in resolved and f"lr={resolved['lr']}" == t["overrides"][0]
        # ${oc.env:SLURMFLOW_TRIAL_DIR} was read in the job: eval found its own trial's result.
        score = json.loads((trial / "eval.json").read_text())
        assert score["overrides"] == [*t["overrides"], "epochs=5"]
    rows = json.loads((run_dir / "results.json").read_text())
    assert sorted(r["trial"] for r in rows) == list(range(6))
    assert rows == sorted(rows, key=lambda r: -r["accuracy"])


def test_hydra_job_chdir_and_sweep_dir_are_honoured_in_an_experiment(project: Path) -> None:
    exp = project / "configs" / "experiment" / "where.yaml"
    exp.write_text(
        "# @package _global_\nname: where\nseed: 0\nhydra:\n  job:\n    chdir: true\n"
        "stages:\n  look:\n    per_trial: true\n    command: pwd > here\n"
    )
    place = project / "elsewhere" / "my-run"
    done = run(
        project,
        SLURMFLOW,
        "launch",
        "experiment=where",
        "seed=1,2",
        f"hydra.sweep.dir={place}",
        "--backend",
        "local",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["run_dir"]) == place  # hydra.sweep.dir: the run directory
    for n in (0, 1):
        trial = place / "trials" / str(n)
        assert (trial / "here").read_text().strip() == str(trial)  # hydra.job.chdir: its trial directory
        # Hydra's own overrides stay out of the trial's overrides.yaml, as Hydra keeps them out.
        assert yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()) == [
            "experiment=where",
            f"seed={n + 1}",
        ]
    again = run(project, SLURMFLOW, "launch", "experiment=where", f"hydra.sweep.dir={place}", "--backend", "local")
    assert again.returncode == 2 and f"hydra.sweep.dir: {place} exists already" in again.stderr


def test_an_app_stage_runs_from_its_trial_directory_under_hydra_job_chdir(project: Path) -> None:
    (project / "configs" / "experiment" / "app_chdir.yaml").write_text(
        "# @package _global_\nname: app_chdir\nlr: 0.1\nhydra:\n  job:\n    chdir: true\n"
        "stages:\n  train:\n    per_trial: true\n    app: jobs/hydra_app/train.py\n    overrides: ['lr=${lr}']\n"
    )
    done = run(project, SLURMFLOW, "launch", "experiment=app_chdir", "lr=0.1,0.2", "--backend", "local", "--json")
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    assert [(s["stage"], s["counts"]) for s in status(run_dir)["stages"]] == [("train", {"COMPLETED": 2})]
    for n, lr in ((0, 0.1), (1, 0.2)):  # the app found from the launch directory, run in the trial's
        assert json.loads((run_dir / "trials" / str(n) / "train" / "result.json").read_text())["lr"] == lr


def test_plan_lists_the_trials_by_number_with_their_overrides(project: Path) -> None:
    done = run(project, SLURMFLOW, "plan", "--trials", "-m", "experiment=hydra_app", "--backend", "local")
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"│\s+(\d+) │ (lr=\S+ seed=\d)", done.stdout)
    assert rows == [
        (str(i), f"lr={lr} seed={s}")
        for i, (lr, s) in enumerate((lr, s) for lr in ("0.1", "0.03", "0.01") for s in (0, 1))
    ]
    doc = json.loads(
        run(project, SLURMFLOW, "plan", "experiment=hydra_app", "--trials", "--json", "--backend", "local").stdout
    )
    assert doc["trials"][5] == {"trial": 5, "overrides": ["lr=0.01", "seed=1"]}
