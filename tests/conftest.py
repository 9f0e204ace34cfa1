from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.contract.harness import FakeHarness, Harness, RealHarness

# The matrix in `make test` runs the cluster tiers once per Slurm version (docker/slurm-cluster).
VERSION = os.environ.get("SLURMFLOW_MINI_VERSION", "24.11")
CONTAINER = os.environ.get("SLURMFLOW_MINI_NAME") or (
    "slurmflow-mini" if VERSION == "24.11" else f"slurmflow-mini-{VERSION}"
)


@pytest.fixture(scope="session")
def slurm_version() -> str:
    """The Slurm version (major.minor) the mini cluster under test runs."""
    return VERSION


@pytest.fixture(scope="session")
def mini_cluster() -> str:
    """The running mini cluster. Integration tests FAIL (never skip) when it is not up: start it
    with `docker/slurm-cluster/cluster.sh up`, or run the whole suite with `make test`."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: the integration tier needs the mini cluster (make test installs it)")
    done = subprocess.run(
        ["docker", "exec", CONTAINER, "cluster-ready", "--wait", "60"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"mini cluster {CONTAINER} is not ready ({(done.stderr or done.stdout).strip()}): "
            "run docker/slurm-cluster/cluster.sh up"
        )
    version = subprocess.run(["docker", "exec", CONTAINER, "sinfo", "-V"], capture_output=True, text=True, check=False)
    # `slurm 22.05.8`, or `slurm-wlm 24.11.5` from Debian's packages.
    if not (version.stdout.split() or [""])[-1].startswith(f"{VERSION}."):
        pytest.fail(
            f"mini cluster {CONTAINER} runs {version.stdout.strip() or version.stderr.strip()}, not Slurm {VERSION}: "
            f"SLURMFLOW_MINI_VERSION={VERSION} docker/slurm-cluster/cluster.sh up"
        )
    return CONTAINER


@pytest.fixture(params=["fake", pytest.param("slurm", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "fake":
        yield FakeHarness.create()
        return
    real = RealHarness.create(request.getfixturevalue("mini_cluster"))
    try:
        yield real
    finally:
        real.cleanup()
