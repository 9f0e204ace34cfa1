"""Planning cost for 1,000 / 10,000 / 100,000 trials of a 3-stage experiment (train -> eval -> report).

Each size runs in a fresh process (peak memory is that process's). Measured:
  prepare   compose once, expand the sweep, plan, validate representatives (what `slurmflow plan` does)
  write     the run directory: config snapshot, trial manifest with offsets, plan, provenance
Baseline, measured in the same run: composing every trial with Hydra (the naive way), timed on a
sample and extrapolated to N.

Usage: python bench/plan_bench.py [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = """\
# @package _global_
name: bench
sweep:
  model.lr: {lrs}
  seed: range({seeds})
seed: 0
model: {{lr: 0.1}}
stages:
  train:
    per_trial: true
    command: python train.py --lr ${{model.lr}} --seed ${{seed}}
    resources: {{gpus: 1, time: 1h}}
  eval:
    per_trial: true
    after_corr: [train]
    command: python eval.py
    resources: {{time: 10m}}
  report:
    after_any: [eval]
    command: python report.py
    resources: {{time: 5m}}
"""


def make_configs(root: Path, n: int) -> Path:
    lrs = 10
    cfg = root / "configs"
    (cfg / "experiment").mkdir(parents=True)
    (cfg / "config.yaml").write_text("defaults:\n  - experiment: bench\n  - _self_\n")
    values = ",".join(f"0.{i + 1}" for i in range(lrs))
    (cfg / "experiment" / "bench.yaml").write_text(EXPERIMENT.format(lrs=values, seeds=n // lrs))
    return cfg


def child(n: int) -> None:
    """One measurement, printed as JSON (runs in its own process)."""
    from slurmflow.experiment import config
    from slurmflow.run.launch import prepare, write_run
    from slurmflow.slurm.types import ClusterInfo

    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_configs(Path(tmp), n)
        cluster = ClusterInfo(max_array_size=1001, partition_gpus={"gpu": 4}, default_partition="gpu")
        t0 = time.perf_counter()
        prep = prepare(cfg, "config", [], cluster)
        t1 = time.perf_counter()
        write_run(prep, Path(tmp) / "runs", cwd=Path(tmp), python=sys.executable, argv=["bench"])
        t2 = time.perf_counter()
        sample = 10
        for i in range(sample):
            config.trial_config(cfg, "config", [f"seed={i}", "model.lr=0.1"])
        per_compose = (time.perf_counter() - t2) / sample
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "n": n,
                    "prepare": t1 - t0,
                    "write": t2 - t1,
                    "submissions": len(prep.plan.nodes),
                    "compose": per_compose,
                    "peak_mb": peak_mb,
                }
            )
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    print(
        f"{'trials':>8} {'arrays':>7} {'prepare s':>10} {'write s':>8} {'peak MiB':>9} {'naive s':>9} {'speed-up':>9}"
    )
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        naive = r["compose"] * n
        ours = r["prepare"] + r["write"]
        print(
            f"{n:>8,} {r['submissions']:>7} {r['prepare']:>10.2f} {r['write']:>8.2f} {r['peak_mb']:>9.0f} "
            f"{naive:>9.1f} {naive / ours:>8.0f}x"
        )
    print("naive = one Hydra compose per trial at plan time (sampled per-compose cost x N)")
    shutil.rmtree(REPO / "bench" / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
