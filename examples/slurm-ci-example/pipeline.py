"""A small research pipeline on Slurm, as a lab would write it: preprocess, then one training task
per learning rate on a GPU (a job array), then aggregate the scores; each stage waits for the one
before it with Slurm's own dependencies (afterok).

    python3 pipeline.py submit --out DIR [--lrs 0.1,0.01,0.001] [--partition gpu]

prints the three job ids as JSON. The stages themselves (preprocess, train, aggregate) are what
the jobs run. Only the standard library: the cluster's python3 runs it as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def sbatch(*args: str) -> int:
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"sbatch failed: {done.stderr.strip()}")
    return int(done.stdout.strip().split(";")[0])


def submit(out: Path, lrs: list[float], partition: str) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "lrs.json").write_text(json.dumps(lrs))
    me = f"python3 {shlex.quote(str(HERE))}"
    where = shlex.quote(str(out))
    logs = str(out / "%x-%A_%a.out")
    pre = sbatch("--job-name=preprocess", "--partition=cpu", f"--output={logs}", f"--wrap={me} preprocess {where}")
    train = sbatch(
        "--job-name=train", f"--partition={partition}", "--gres=gpu:1", f"--array=0-{len(lrs) - 1}",
        f"--dependency=afterok:{pre}", f"--output={logs}", f"--wrap={me} train {where}",
    )  # fmt: skip
    agg = sbatch(
        "--job-name=aggregate", "--partition=cpu", f"--dependency=afterok:{train}", f"--output={logs}",
        f"--wrap={me} aggregate {where}",
    )  # fmt: skip
    return {"preprocess": pre, "train": train, "aggregate": agg}


def preprocess(out: Path) -> None:
    (out / "data.json").write_text(json.dumps([i / 100 for i in range(100)]))


def train(out: Path) -> None:
    task = int(os.environ["SLURM_ARRAY_TASK_ID"])
    lr = json.loads((out / "lrs.json").read_text())[task]
    data = json.loads((out / "data.json").read_text())
    loss = sum((x - 0.5) ** 2 for x in data) / len(data) + abs(math.log10(lr) + 2)  # best at lr=0.01
    record = {
        "lr": lr,
        "loss": loss,
        "node": os.environ.get("SLURMD_NODENAME"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_gpus": os.environ.get("SLURM_JOB_GPUS"),
    }
    (out / f"train-{task}.json").write_text(json.dumps(record))


def aggregate(out: Path) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("train-*.json"))]
    best = min(runs, key=lambda r: r["loss"])
    (out / "best.json").write_text(json.dumps({"lr": best["lr"], "loss": best["loss"], "trials": len(runs)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["submit", "preprocess", "train", "aggregate"])
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--out", dest="out_opt", type=Path)
    parser.add_argument("--lrs", default="0.1,0.01,0.001")
    parser.add_argument("--partition", default="gpu")
    args = parser.parse_args()
    out = args.out_opt or args.out
    if out is None:
        parser.error("give the output folder: --out DIR")
    if args.stage == "submit":
        print(json.dumps(submit(out, [float(v) for v in args.lrs.split(",")], args.partition)))
    else:
        {"preprocess": preprocess, "train": train, "aggregate": aggregate}[args.stage](out)


if __name__ == "__main__":
    main()
