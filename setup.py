"""The wheel carries the mini cluster (docker/slurm-cluster) as slurmflow/testing/cluster, so that
`pip install slurmflow[testing]` gives other projects the slurm_cluster fixture without a checkout.
Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CLUSTER = HERE / "docker" / "slurm-cluster"


class BuildPyWithCluster(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not CLUSTER.is_dir():
            return  # an editable install finds docker/slurm-cluster in the checkout itself
        target = Path(self.build_lib) / "slurmflow" / "testing" / "cluster"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CLUSTER, target, ignore=shutil.ignore_patterns(".build", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithCluster})
