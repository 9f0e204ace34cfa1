"""End to end on the mini cluster: `slurmflow launch` of a 10,000-trial, 3-stage sweep
(train -> eval by after_corr -> report by after_any) against the same arrays and dependencies
submitted with bare sbatch calls, in the same run, interleaved.

Run it inside the cluster, as on a login node (make bench does):
  docker exec -u bob -w <a writable dir> slurmflow-mini /opt/slurmflow/venv/bin/python /src/bench/launch_bench.py
Jobs are submitted held (--hold) and cancelled after each round: nothing runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_bench import make_configs


def clear_queue() -> None:
    subprocess.run(["scancel", "--me"], check=False)
    for _ in range(120):
        out = subprocess.run(["squeue", "--me", "--noheader", "--states=PD,R"], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def ours(workdir: Path) -> tuple[float, int]:
    t = time.perf_counter()
    done = subprocess.run(
        ["slurmflow", "launch", "--hold", "--json", "--runs-dir", "runs"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - t
    return seconds, len(json.loads(done.stdout)["nodes"])


def bare(n: int, max_array: int = 1001) -> tuple[float, int]:
    """What a careful user writes by hand: chunked arrays, aftercorr pairs, one afterany fan-in."""
    t = time.perf_counter()
    calls = 0

    def sbatch(*args: str) -> str:
        nonlocal calls
        calls += 1
        out = subprocess.run(
            ["sbatch", "--parsable", "--hold", "--output=/dev/null", *args, "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip().split(";")[0]

    chunks = [min(max_array, n - s) for s in range(0, n, max_array)]
    train = [sbatch("--job-name=bare.train", "--gres=gpu:1", "--time=1:00:00", f"--array=0-{c - 1}") for c in chunks]
    evals = [
        sbatch(
            "--job-name=bare.eval",
            "--time=10:00",
            f"--array=0-{c - 1}",
            f"--dependency=aftercorr:{t_id}",
            "--kill-on-invalid-dep=yes",
        )
        for c, t_id in zip(chunks, train, strict=True)
    ]
    sbatch(
        "--job-name=bare.report", "--time=5:00", "--dependency=afterany:" + ":".join(evals), "--kill-on-invalid-dep=yes"
    )
    return time.perf_counter() - t, calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, nargs="+", default=[10_000, 25_000])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(
        f"{'trials':>8} {'submissions':>12} {'bare s':>8} {'slurmflow s':>12} {'ratio':>7}   (median of {args.rounds})"
    )
    for n in args.trials:
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            work = Path(tmp)
            make_configs(work, n)
            mine, base = [], []
            clear_queue()
            for _ in range(args.rounds):
                seconds, subs = ours(work)
                mine.append(seconds)
                clear_queue()
                seconds, _calls = bare(n)
                base.append(seconds)
                clear_queue()
        m, b = statistics.median(mine), statistics.median(base)
        print(f"{n:>8,} {subs:>12} {b:>8.2f} {m:>12.2f} {m / b:>6.2f}x")
    print("slurmflow = the whole `slurmflow launch` process: Python start, Hydra compose, planning, the run")
    print("directory with its trial manifest, and the same sbatch calls, each with an fsync'd intent before it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
