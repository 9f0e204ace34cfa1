"""python -m slurmflow.testing dir|up|down|status|logs: the mini cluster without pytest.

`dir` prints the folder of cluster.sh (for `bash "$(python -m slurmflow.testing dir)/cluster.sh" up`);
the other words run cluster.sh with the same SLURMFLOW_MINI_* environment (see its header).
"""

from __future__ import annotations

import subprocess
import sys

from slurmflow.testing.cluster import ClusterError, cluster_dir


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("dir", "up", "down", "status", "logs"):
        print("usage: python -m slurmflow.testing dir|up|down|status|logs", file=sys.stderr)
        return 2
    try:
        where = cluster_dir()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if argv[0] == "dir":
        print(where)
        return 0
    return subprocess.run(["bash", str(where / "cluster.sh"), argv[0]], check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
