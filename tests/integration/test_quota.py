"""Quotas on the mini cluster, as non-root users: carol (Slurm Administrator) applies a quota file,
bob (no AdminLevel) cannot; bob's campaigns meet the cap and the GPU-hour budget, read from Slurm."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slurmflow.slurm.accounting import SACCTMGR_FORMAT, parse_associations
from tests.integration.test_launch import REPO, SHARED, count_jobs_by_name

pytestmark = pytest.mark.integration

SLEEPY = """# @package _global_
name: sleepy
sweep:
  seed: range(6)
seed: 0
stages:
  train:
    per_trial: true
    command: python -c "import time; time.sleep(6)"
    resources: {gpus: 1, cpus: 1, time: 30m}
"""
CLEAR = """accounts:
  lab-b: {gpus: unlimited, gpu_hours: unlimited, max_running_jobs: unlimited, max_submit_jobs: unlimited,
          users: {bob: {gpus: unlimited, max_submit_jobs: unlimited}}}
"""


def run_as(container: str, user: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", "-u", user, "-w", str(cwd), container, *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def bobdir(mini_cluster: str) -> Iterator[Path]:
    """bob's project directory, and lab-b's limits cleared again afterwards whatever happens."""
    path = SHARED / f"it-{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "configs", path / "configs")
    (path / "configs" / "experiment" / "sleepy.yaml").write_text(SLEEPY)
    (path / "clear.yaml").write_text(CLEAR)
    subprocess.run(["chown", "-R", "2002:2002", str(path)], check=True)
    yield path
    subprocess.run(["docker", "exec", "-u", "bob", mini_cluster, "scancel", "--user=bob"], check=False)
    done = run_as(mini_cluster, "carol", path, "slurmflow", "admin", "quota", "apply", "clear.yaml", "--yes")
    assert done.returncode == 0, done.stderr
    shutil.rmtree(path, ignore_errors=True)


def limits(container: str) -> dict[tuple[str, str], Any]:
    out = subprocess.run(
        ["docker", "exec", container, "sacctmgr", "--noheader", "--parsable2", "show", "assoc", SACCTMGR_FORMAT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {a.key: dict(a.limits) for a in parse_associations(out)}


def write_quota(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def test_apply_sets_exactly_the_declared_limits_idempotently_and_only_for_admins(
    mini_cluster: str, bobdir: Path
) -> None:
    write_quota(
        bobdir / "q.yaml",
        "cluster: mini\naccounts:\n  lab-b:\n    gpus: 3\n    gpu_hours: 12.5\n    max_running_jobs: 7\n"
        "    users:\n      bob: {gpus: 2, max_submit_jobs: 40}\n",
    )
    before = limits(mini_cluster)
    # bob has no AdminLevel: refused with the privilege named, nothing applied.
    denied = run_as(mini_cluster, "bob", bobdir, "slurmflow", "admin", "quota", "apply", "q.yaml", "--yes")
    assert denied.returncode == 2 and "bob has Slurm AdminLevel None" in denied.stderr, denied.stderr
    assert "AdminLevel Operator or Administrator" in denied.stderr and len(denied.stderr.strip().splitlines()) == 1
    assert limits(mini_cluster) == before
    # Slurm itself refuses bob too: slurmflow's check only says so sooner.
    raw = run_as(mini_cluster, "bob", bobdir, "sacctmgr", "-i", "modify", "account", "lab-b", "set", "GrpJobs=1")
    assert raw.returncode != 0 and limits(mini_cluster) == before

    dry = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "q.yaml", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["commands"] == [
        "sacctmgr -i modify account where name=lab-b cluster=mini set GrpTRES=gres/gpu=3 GrpTRESMins=gres/gpu=750 GrpJobs=7",
        "sacctmgr -i modify user where name=bob account=lab-b cluster=mini set GrpTRES=gres/gpu=2 MaxSubmitJobs=40",
    ]
    assert limits(mini_cluster) == before  # a dry run changes nothing

    applied = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "q.yaml", "--yes", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    after = limits(mini_cluster)
    assert after[("lab-b", "")] == {
        "gpus": 3,
        "gpu_hours": 750,
        "max_running_jobs": 7,
        "max_submit_jobs": None,
        "qos": ("normal",),
    }
    assert after[("lab-b", "bob")] == {
        "gpus": 2,
        "gpu_hours": None,
        "max_running_jobs": None,
        "max_submit_jobs": 40,
        "qos": ("normal",),
    }
    assert {k: v for k, v in after.items() if k[0] != "lab-b"} == {k: v for k, v in before.items() if k[0] != "lab-b"}

    again = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "q.yaml", "--yes", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == [] and "no change" in again.stderr
    assert limits(mini_cluster) == after

    show = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "show", "--account", "lab-b", "--json")
    rows = {(r["account"], r["user"]): r for r in json.loads(show.stdout)["associations"]}
    assert rows[("lab-b", None)]["gpus"]["limit"] == 3 and rows[("lab-b", None)]["gpu_hours"]["limit"] == 12.5
    assert rows[("lab-b", "bob")]["submitted_jobs"]["limit"] == 40
    mine = run_as(mini_cluster, "bob", bobdir, "slurmflow", "quota", "--json")
    doc = json.loads(mine.stdout)
    assert doc["user"] == "bob" and {r["account"] for r in doc["associations"]} == {"lab-b"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "accounts:\n  lab-b: {gpus: -2}\n",
            "accounts.lab-b.gpus: expected a whole number from 0 to 4294967294 or unlimited (got -2)",
        ),
        ("accounts:\n  lab-z: {gpus: 2}\n", "accounts.lab-z: no such account in Slurm"),
        ("accounts:\n  lab-b: {users: {alice: {gpus: 1}}}\n", "alice has no association with account lab-b"),
        ("accounts:\n  lab-b: {gpus: 2\n", "malformed YAML"),
    ],
)
def test_bad_quota_file_is_one_line_and_applies_nothing(
    mini_cluster: str, bobdir: Path, text: str, needle: str
) -> None:
    write_quota(bobdir / "bad.yaml", text)
    before = limits(mini_cluster)
    done = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "bad.yaml", "--yes")
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and limits(mini_cluster) == before


def running_gpu_jobs(container: str) -> int:
    out = run_as(container, "bob", Path("/"), "squeue", "--me", "--states=RUNNING", "--noheader", "--format=%i").stdout
    return len(out.split())


@pytest.mark.smoke
def test_cap_of_two_gpus_holds_a_sweep_to_two_at_once(mini_cluster: str, bobdir: Path) -> None:
    write_quota(bobdir / "cap.yaml", "accounts:\n  lab-b: {gpus: 2}\n")
    assert (
        run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "cap.yaml", "--yes").returncode
        == 0
    )
    launch = run_as(
        mini_cluster, "bob", bobdir, "slurmflow", "launch", "experiment=sleepy", "--runs-dir", "runs", "--json"
    )
    assert launch.returncode == 0, launch.stderr
    assert "may use 2 GPUs at once" in launch.stderr and "about 3 waves" in launch.stderr, launch.stderr
    run_id = json.loads(launch.stdout)["run_id"]
    (fit,) = json.loads(launch.stdout)["quota"]
    assert (fit["account"], fit["peak_gpus"], fit["gpus_cap"], fit["throttled"]) == ("lab-b", 6, 2, True)
    most, reasons, deadline = 0, set(), time.monotonic() + 150
    while time.monotonic() < deadline:
        most = max(most, running_gpu_jobs(mini_cluster))
        st = run_as(mini_cluster, "bob", bobdir, "slurmflow", "status", run_id, "--runs-dir", "runs", "--json")
        doc = json.loads(st.stdout)
        train = doc["stages"][0]
        reasons |= {f"{r}: {p['why']}" for r, p in train["pending"].items()}
        if doc["done"]:
            break
        time.sleep(1)
    assert doc["done"] and doc["stages"][0]["counts"] == {"COMPLETED": 6}, doc
    assert most == 2, most  # the cap reached, never passed: observed from squeue
    assert "AssocGrpGRES: the account's concurrent GPU cap (GrpTRES gres/gpu) is reached" in reasons, reasons


def test_budget_nearly_spent_refuses_the_launch_and_slurm_holds_what_is_forced(mini_cluster: str, bobdir: Path) -> None:
    show = run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "show", "--account", "lab-b", "--json")
    used_h = next(r for r in json.loads(show.stdout)["associations"] if r["user"] is None)["gpu_hours"]["used"]
    budget_min = math.ceil(used_h * 60) + 10  # 10 GPU-minutes left
    write_quota(bobdir / "budget.yaml", f"accounts:\n  lab-b: {{gpu_hours: {budget_min / 60}}}\n")
    assert (
        run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "budget.yaml", "--yes").returncode
        == 0
    )

    # 6 tasks x 1 GPU x 30 min = 3 GPU-hours against about 10 GPU-minutes: refused, nothing queued.
    queued = count_jobs_by_name(mini_cluster, "sf.sleepy")
    refused = run_as(mini_cluster, "bob", bobdir, "slurmflow", "launch", "experiment=sleepy", "--runs-dir", "runs")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "needs up to 3.00 GPU-hours" in line and "account lab-b has 0.1" in line and "--force" in line, line
    assert not (bobdir / "runs").exists() or not list((bobdir / "runs").iterdir())
    assert count_jobs_by_name(mini_cluster, "sf.sleepy") == queued
    plan = run_as(mini_cluster, "bob", bobdir, "slurmflow", "plan", "experiment=sleepy", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["quota"][0]["over_budget"] is True

    # --force submits; Slurm (safe enforcement) starts none: a 30-minute GPU task cannot fit.
    forced = run_as(
        mini_cluster,
        "bob",
        bobdir,
        "slurmflow",
        "launch",
        "experiment=sleepy",
        "--runs-dir",
        "runs",
        "--force",
        "--json",
    )
    assert forced.returncode == 0, forced.stderr
    run_id = json.loads(forced.stdout)["run_id"]
    deadline, pending = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        st = json.loads(
            run_as(mini_cluster, "bob", bobdir, "slurmflow", "status", run_id, "--runs-dir", "runs", "--json").stdout
        )
        pending = st["stages"][0]["pending"]
        if "AssocGrpGRESMinutes" in pending:
            break
        time.sleep(2)
    assert pending.get("AssocGrpGRESMinutes", {}).get("tasks") == 6, pending
    assert "GPU-hour budget" in pending["AssocGrpGRESMinutes"]["why"]
    assert running_gpu_jobs(mini_cluster) == 0

    # The budget exhausted outright: Slurm holds even a one-minute GPU job.
    write_quota(bobdir / "spent.yaml", "accounts:\n  lab-b: {gpu_hours: 0}\n")
    assert (
        run_as(mini_cluster, "carol", bobdir, "slurmflow", "admin", "quota", "apply", "spent.yaml", "--yes").returncode
        == 0
    )
    tiny = run_as(
        mini_cluster,
        "bob",
        bobdir,
        "sbatch",
        "--parsable",
        "--gres=gpu:1",
        "--time=1",
        "--output=/dev/null",
        "--wrap=true",
    )
    job = tiny.stdout.strip()
    deadline, reason = time.monotonic() + 60, ""
    while time.monotonic() < deadline and reason != "AssocGrpGRESMinutes":
        reason = run_as(
            mini_cluster, "bob", bobdir, "squeue", "--noheader", "--format=%r", "--jobs", job
        ).stdout.strip()
        time.sleep(2)
    assert reason == "AssocGrpGRESMinutes"
