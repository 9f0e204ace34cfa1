"""Without Slurm, or with its client installed but not configured, every command that needs Slurm
says so in one line and points at --backend local (exit 2), instead of a Python error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNCONFIGURED = (REPO / "tests" / "fixtures" / "slurm" / "24.11" / "scontrol_unconfigured.err").read_text()
SLURM = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo", "sacctmgr", "sshare")


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURMFLOW_SLURM_PREFIX"}
    env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        [sys.executable, "-m", "slurmflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for d in ("configs", "jobs"):
        shutil.copytree(REPO / d, tmp_path / d)
    return tmp_path


def test_slurm_missing(project: Path, tmp_path: Path) -> None:
    if any(shutil.which(p, path="/usr/bin:/bin") for p in SLURM):
        pytest.fail("this test needs a machine without Slurm's commands in /usr/bin")
    empty = tmp_path / "bin"
    empty.mkdir()
    for args in (["cluster"], ["quota"], ["launch", "--backend", "slurm"]):
        done = run(empty, project, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Slurm's commands are not installed here" in lines[0], (args, lines)
        assert "--backend local" in lines[0] and "Errno" not in lines[0]
    assert not (project / "runs").exists()  # nothing written


def test_slurm_installed_but_not_configured(project: Path, tmp_path: Path) -> None:
    """A laptop with slurm-client from the distribution: auto-detection finds sbatch, Slurm fails."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "said.err").write_text(UNCONFIGURED)
    for name in SLURM:
        script = fake / name
        script.write_text(f"#!/bin/sh\nsed 's/^scontrol/{name}/' '{fake}/said.err' >&2\nexit 1\n")
        script.chmod(0o755)
    for args in (["cluster"], ["launch"], ["plan"]):
        done = run(fake, project, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "installed here but not configured" in lines[0], (args, lines)
        assert "--backend local" in lines[0]
    assert not (project / "runs").exists()
    # The way out that the message names works.
    assert run(fake, project, "plan", "--backend", "local").returncode == 0


def test_a_missing_prefix_program_is_named(project: Path, tmp_path: Path) -> None:
    done = run(tmp_path, project, "cluster", "--via", "no-such-remote-shell login1")
    assert done.returncode == 2 and "no-such-remote-shell not found on PATH" in done.stderr
