"""The mini cluster is what the issue says it is, read from Slurm itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurmflow.slurm import cluster

pytestmark = [pytest.mark.integration, pytest.mark.smoke]
REPO = Path(__file__).resolve().parents[2]


def in_cluster(container: str, *argv: str, user: str = "alice") -> str:
    done = subprocess.run(
        ["docker", "exec", "-u", user, container, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def test_controller_settings(mini_cluster: str, slurm_version: str) -> None:
    cfg = cluster.parse_config(in_cluster(mini_cluster, "scontrol", "show", "config"))
    assert cfg.version.startswith(f"{slurm_version}.")
    assert cfg.max_array_size == 1001 and cfg.max_job_count >= 10_000
    enforce = set(cfg.raw["AccountingStorageEnforce"].split(","))
    assert {"associations", "limits", "qos"} <= enforce
    assert "gres/gpu" in cfg.raw["AccountingStorageTRES"].split(",")
    assert cfg.raw["PriorityType"] == "priority/multifactor"
    assert cfg.raw["AccountingStorageType"] == "accounting_storage/slurmdbd"


def test_nodes_and_partitions(mini_cluster: str) -> None:
    rows = cluster.parse_sinfo(in_cluster(mini_cluster, *cluster.SINFO_ARGV))
    gpu = [r for r in rows if r["partition"] == "gpu"]
    assert len(gpu) >= 2 and all(r["gpus"] == 4 and r["default"] for r in gpu)
    assert any(r["partition"] == "cpu" for r in rows)
    assert all(r["state"] in ("idle", "mixed", "allocated") for r in rows)


def test_accounts_and_users_in_slurmdbd(mini_cluster: str) -> None:
    out = in_cluster(mini_cluster, "sacctmgr", "-n", "-P", "show", "assoc", "format=Account,User")
    pairs = {tuple(line.split("|")) for line in out.splitlines()}
    assert {("lab-a", "alice"), ("lab-b", "bob"), ("lab-a", "carol")} <= pairs
    assert in_cluster(mini_cluster, "id", "-u").strip() == "2001"  # alice is not root


def test_cluster_command_inside_the_cluster(mini_cluster: str, slurm_version: str) -> None:
    doc = json.loads(in_cluster(mini_cluster, "slurmflow", "cluster", "--json"))
    assert doc["max_array_size"] == 1001 and doc["slurm_version"].startswith(f"{slurm_version}.")
    assert sum(n["gpus"] for n in doc["nodes"]) == 8


def test_cluster_command_from_the_host_through_a_prefix(mini_cluster: str) -> None:
    env = {**os.environ, "SLURMFLOW_SLURM_PREFIX": f"docker exec -i -u bob {mini_cluster}", "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "slurmflow", "cluster"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "gpu (default)" in done.stdout and "gpu1,gpu2" in done.stdout


def test_cluster_command_reports_an_unreachable_cluster_in_one_line() -> None:
    env = {**os.environ, "SLURMFLOW_SLURM_PREFIX": "docker exec -i slurmflow-no-such-container"}
    done = subprocess.run([sys.executable, "-m", "slurmflow", "cluster"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("slurmflow: error:") and len(done.stderr.strip().splitlines()) == 1
    assert "No such container" in done.stderr
