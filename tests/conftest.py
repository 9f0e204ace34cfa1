from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.harness import FakeHarness, Harness, LocalHarness, RealHarness

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


@pytest.fixture(params=["fake", "local", pytest.param("slurm", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "fake":
        yield FakeHarness.create()
        return
    if request.param == "local":
        local = LocalHarness.create(tmp_path)
        try:
            yield local
        finally:
            local.cleanup()
        return
    real = RealHarness.create(request.getfixturevalue("mini_cluster"))
    try:
        yield real
    finally:
        real.cleanup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A contract scenario marked `not_local` (nodes, users, account caps) has no local case."""
    gone = [i for i in items if i.get_closest_marker("not_local") and "[local]" in i.nodeid]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [i for i in items if i not in gone]
