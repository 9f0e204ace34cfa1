"""Monitoring cost on the controller: RPCs per minute (from sdiag, by user) while `slurmflow monitor`
watches a campaign of 100 tasks and one of 5,000, for the same time, at the same tick interval.
The baseline, in the same run, is what a per-job poller costs: one squeue per array task per tick.

Run it inside the cluster as a user with no other work (make bench does):
  docker exec -u bob -w <a writable dir> slurmflow-mini /opt/slurmflow/venv/bin/python /src/bench/monitor_bench.py
Campaigns are submitted held, so nothing runs and the job count stays fixed; they are cancelled after.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_bench import make_configs


def rpc_count(user: str) -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^\s*{re.escape(user)}\s*\(\s*\d+\)\s*count:(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def measure(trials: int, seconds: float, interval: float, user: str) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        work = Path(tmp)
        make_configs(work, trials)
        doc = json.loads(
            subprocess.run(
                ["slurmflow", "launch", "--hold", "--json", "--runs-dir", "runs"],
                cwd=work,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        tasks = 2 * trials + 1
        time.sleep(2)
        before = rpc_count(user)
        proc = subprocess.Popen(
            [
                "slurmflow",
                "monitor",
                doc["run_id"],
                "--runs-dir",
                "runs",
                "--interval",
                str(interval),
                "--max-interval",
                str(interval),
            ],
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(seconds)
        proc.terminate()
        proc.wait()
        after = rpc_count(user)
        subprocess.run(["scancel", "--me"], check=False)
        time.sleep(3)
    return tasks, (after - before) * 60 / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=5)
    args = ap.parse_args()
    user = getpass.getuser()
    ticks = args.seconds / args.interval * 60 / args.seconds
    header = f"{'tasks':>7} {'RPC/min (slurmflow)':>20} {'RPC/min (per-task poller)':>26} {'ratio':>8}"
    print(f"{header}   tick every {args.interval:g} s")
    rows = []
    for trials in (50, 2500):  # 2 per-trial stages + 1 job: 101 and 5,001 tasks
        tasks, per_min = measure(trials, args.seconds, args.interval, user)
        naive = tasks * ticks
        rows.append(per_min)
        print(f"{tasks:>7,} {per_min:>20.1f} {naive:>26,.0f} {naive / max(per_min, 1e-9):>7.0f}x")
    print(f"5,001 vs 101 tasks: {rows[1] / max(rows[0], 1e-9):.2f}x the RPCs (flat: one batched squeue per tick;")
    print("sacct goes to slurmdbd, not the controller). The per-task poller is computed: one squeue per task per tick.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
