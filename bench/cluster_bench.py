"""Mini cluster start times, and the cost of going through slurmflow's runner.

Prints:
- cold start: every image layer rebuilt (Debian packages and Python wheels fetched), then started;
- warm start: the cached image, a fresh container, until ready;
- latency of sbatch, squeue and sacct through SlurmCLI (runner, parser, error mapping) against
  the very same argv run with a bare subprocess.run in the same process, interleaved. The ratio
  is slurmflow's overhead; both go through `docker exec`, as a host-side user's commands would.

Usage: python bench/cluster_bench.py [--skip-cold] [--n 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.slurm import sbatch
from slurmflow.slurm import text as slurm_text
from slurmflow.slurm.runner import SubprocessRunner
from slurmflow.slurm.types import JobSpec

REPO = Path(__file__).resolve().parents[1]
CLUSTER = ["bash", str(REPO / "docker" / "slurm-cluster" / "cluster.sh")]
CONTAINER = os.environ.get("SLURMFLOW_MINI_NAME", "slurmflow-mini")


def timed_up(extra_env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([*CLUSTER, "up"], check=True, env={**os.environ, **extra_env}, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def sample(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ours: list[float], bare: list[float]) -> str:
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    p95 = sorted(ours)[int(0.95 * (len(ours) - 1))]
    return f"{name:<8} {m_bare:9.1f} {m_ours:9.1f} {p95:9.1f} {m_ours / m_bare:7.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-cold", action="store_true", help="do not rebuild the image (saves a few minutes)")
    ap.add_argument("--n", type=int, default=30, help="calls per command and side")
    args = ap.parse_args()

    if not args.skip_cold:
        print(f"cold start (no layer cache): {timed_up({'SLURMFLOW_MINI_NO_CACHE': '1'}):6.1f} s", flush=True)
    print(f"warm start (cached image):   {timed_up({}):6.1f} s", flush=True)

    prefix = ("docker", "exec", "-i", "-u", "alice", CONTAINER)
    backend = SlurmCLI(SubprocessRunner(prefix=prefix))
    # Held jobs (a begin time in the future) so the benchmark measures submission, not scheduling.
    spec = JobSpec(name="bench-sbatch", script="true", output="/dev/null", extra_args=("--begin=now+1hour",))
    script = sbatch.render_script(spec)
    argv_sbatch = [*prefix, *sbatch.argv(spec)]

    def bare(argv: list[str], stdin: str | None = None) -> Callable[[], object]:
        return lambda: subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)

    ids: list[str] = []
    results: dict[str, tuple[list[float], list[float]]] = {}
    for name, ours_fn, bare_fn in (
        ("sbatch", lambda: ids.append(backend.submit(spec)), bare(argv_sbatch, script)),
        (
            "squeue",
            lambda: backend._squeue([], "bench-sbatch"),
            bare([*prefix, *slurm_text.squeue_argv(name="bench-sbatch")]),
        ),
        ("sacct", lambda: backend.query(ids[:50]), bare([*prefix, *slurm_text.sacct_argv(ids[:50])])),
    ):
        ours: list[float] = []
        base: list[float] = []
        for _ in range(args.n):  # interleaved, so drift on a noisy machine hits both sides alike
            ours += sample(ours_fn, 1)
            base += sample(bare_fn, 1)
        results[name] = (ours, base)
    subprocess.run([*prefix, "scancel", "--name=bench-sbatch"], check=False)

    print(f"\nlatency over {args.n} calls each (ms)")
    print(f"{'command':<8} {'bare med':>9} {'ours med':>9} {'ours p95':>9} {'ratio':>8}")
    for name, (ours, base) in results.items():
        print(row(name, ours, base))
    print("note: sacct through slurmflow is one squeue + one sacct (controller and accounting merged);")
    print("      its baseline is the bare sacct alone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
