"""Test against a real Slurm: the mini cluster (docker/slurm-cluster) and its pytest plugin.

`pip install slurmflow[testing]` and use the `slurm_cluster` fixture (see slurmflow.testing.plugin),
or drive a cluster from any Python code with MiniCluster.up(Spec(...)).
"""

from slurmflow.testing.cluster import (
    ACCOUNTS,
    USERS,
    VERSIONS,
    Accounted,
    ClusterError,
    MiniCluster,
    Spec,
    cluster_dir,
)

__all__ = ["ACCOUNTS", "USERS", "VERSIONS", "Accounted", "ClusterError", "MiniCluster", "Spec", "cluster_dir"]
