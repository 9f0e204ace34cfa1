"""pytest plugin: a real Slurm cluster for a project's tests (`pip install slurmflow[testing]`).

    def test_my_pipeline(slurm_cluster):
        job = slurm_cluster.sbatch(wrap="python3 train.py", partition="gpu", gres="gpu:1")
        [row] = slurm_cluster.wait(job)
        assert row.state == "COMPLETED"

`slurm_cluster` (session-scoped) starts the mini cluster once, or reuses a running one of the same
version and shape, and removes at the end what it started. Choose it on the command line or in
the project's pytest configuration (the command line wins):

    --slurm-version 22.05|24.11|26.05     slurm_version        (or SLURMFLOW_MINI_VERSION)
    --slurm-gpu-nodes N                   slurm_gpu_nodes      (default 2)
    --slurm-gpus-per-node N               slurm_gpus_per_node  (default 4)
    --slurm-cpu-nodes N                   slurm_cpu_nodes      (default 1)
    --slurm-keep                          slurm_keep           leave a started cluster running
    slurm_mount_rootdir (ini; default true): the project's folder is visible in the cluster at its
    own path, read-only, so jobs run the project's code as they would from a shared file system.

`slurm_cluster_factory` starts further clusters (another version, another shape) in the same
session; `slurm_tmp_path` is a fresh folder every user of the cluster can write, at the same path
on the host and in the cluster.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slurmflow.testing.cluster import ClusterError, MiniCluster, Spec

_INTS = (("gpu_nodes", 2), ("gpus_per_node", 4), ("cpu_nodes", 1))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("slurmflow", "the mini Slurm cluster (slurm_cluster fixture)")
    group.addoption("--slurm-version", default=None, help="Slurm major.minor: 22.05, 24.11 or 26.05")
    for name, default in _INTS:
        flag = "--slurm-" + name.replace("_", "-")
        group.addoption(flag, type=int, default=None, help=f"{name.replace('_', ' ')} (default {default})")
    group.addoption("--slurm-keep", action="store_true", default=None, help="leave a cluster it started running")
    parser.addini("slurm_version", "Slurm major.minor of the slurm_cluster fixture", default="")
    for name, default in _INTS:
        parser.addini(f"slurm_{name}", f"{name.replace('_', ' ')} of the slurm_cluster fixture", default=str(default))
    parser.addini("slurm_keep", "leave a cluster the session started running", type="bool", default=False)
    parser.addini(
        "slurm_mount_rootdir",
        "mount the project's folder in the cluster, read-only, at its own path",
        type="bool",
        default=True,
    )


def _spec(config: pytest.Config, **override: str | int) -> Spec:
    version = (
        config.getoption("slurm_version")
        or config.getini("slurm_version")
        or os.environ.get("SLURMFLOW_MINI_VERSION", "24.11")
    )
    counts: dict[str, int] = {}
    for name, _default in _INTS:
        given = config.getoption(f"slurm_{name}")
        raw = given if given is not None else config.getini(f"slurm_{name}")
        try:
            counts[name] = int(raw)
        except ValueError:
            raise pytest.UsageError(f"slurm_{name} = {raw!r}: expected a whole number") from None
    values: dict[str, str | int] = {"version": str(version), **counts, **override}
    try:
        return Spec(**values)  # type: ignore[arg-type]
    except ClusterError as exc:
        raise pytest.UsageError(f"slurm_cluster: {exc}") from None


def _keep(config: pytest.Config) -> bool:
    return bool(config.getoption("slurm_keep") or config.getini("slurm_keep"))


def _mounts(config: pytest.Config) -> list[Path]:
    return [Path(config.rootpath)] if config.getini("slurm_mount_rootdir") else []


def _start(config: pytest.Config, spec: Spec) -> MiniCluster:
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    workdir = Path(cache.mkdir(f"slurmflow-mini-{spec.container}")) if cache is not None else None
    try:
        return MiniCluster.up(spec, workdir=workdir, mounts=_mounts(config))
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)


def _finish(request: pytest.FixtureRequest, cluster: MiniCluster) -> None:
    """At the end of the session: when a test failed, what the cluster logged (the container is
    about to go); then remove what the session started, unless asked to keep it."""
    if request.session.testsfailed:
        sys.stderr.write(f"\n===== the mini cluster {cluster.name}, as the session ends\n{cluster.logs()}\n")
    if not _keep(request.config):
        cluster.down()


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[MiniCluster]:
    """The session's mini Slurm cluster (see the plugin's options)."""
    cluster = _start(request.config, _spec(request.config))
    try:
        yield cluster
    finally:
        _finish(request, cluster)


@pytest.fixture(scope="session")
def slurm_cluster_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., MiniCluster]]:
    """make(version=..., gpu_nodes=..., gpus_per_node=..., cpu_nodes=...) -> a cluster of that
    kind, started once per session; what it started is removed at the end."""
    made: dict[Spec, MiniCluster] = {}

    def make(**override: str | int) -> MiniCluster:
        spec = _spec(request.config, **override)
        if spec not in made:
            made[spec] = _start(request.config, spec)
        return made[spec]

    try:
        yield make
    finally:
        for cluster in made.values():
            _finish(request, cluster)


@pytest.fixture
def slurm_tmp_path(slurm_cluster: MiniCluster, request: pytest.FixtureRequest) -> Path:
    """A fresh folder for this test, writable by every user of the cluster, at the same path on
    the host and in the cluster."""
    return slurm_cluster.scratch(request.node.name)
