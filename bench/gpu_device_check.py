"""The GPU sampler on a real GPU: a CUDA workload computes, then sleeps, under the NVML sampler.

Pass: utilisation above 80% (median) while it computes and below 5% (median) while it sleeps,
read back from the sample file the sampler wrote, as `slurmflow gpu` reads it. The workload uses
PyTorch, or CuPy when PyTorch is missing.

Usage (on a GPU node): python bench/gpu_device_check.py [--busy 30] [--idle 30] [--gpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.sampler import Sampler
from slurmflow.model import GpuSampling

WORKLOAD = r"""
import sys, time
busy, idle = float(sys.argv[1]), float(sys.argv[2])
try:
    import torch
    x = torch.randn(8192, 8192, device="cuda")
    def step():
        (x @ x).sum().item()
except ImportError:
    import cupy
    x = cupy.random.standard_normal((8192, 8192), dtype=cupy.float32)
    def step():
        float((x @ x).sum())
step()
print("busy", time.time(), flush=True)
end = time.time() + busy
while time.time() < end:
    step()
print("idle", time.time(), flush=True)
time.sleep(idle)
print("done", time.time(), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--gpu", default="0", help="the GPU to use, as CUDA_VISIBLE_DEVICES names it")
    args = ap.parse_args()
    env = {"CUDA_VISIBLE_DEVICES": args.gpu}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpu.check.csv"
        sampler = Sampler(path, GpuSampling(interval=1.0, flush=5.0, source="nvml"), env=env, meta={"host": "device"})
        sampler.start()
        run = subprocess.run(
            [sys.executable, "-c", WORKLOAD, str(args.busy), str(args.idle)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        sampler.stop()
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 1
        marks = {line.split()[0]: float(line.split()[1]) for line in run.stdout.splitlines()}
        text = path.read_text()
    log = gpustats.parse(text)
    # Two seconds off each edge: NVML averages over up to a second, and the phases switch mid-sample.
    busy = gpustats.window(log, marks["busy"] + 2, marks["idle"] - 1)
    idle = gpustats.window(log, marks["idle"] + 2, marks["done"] - 1)
    head = log.segments[0] if log.segments else {}
    print(json.dumps({"gpus": head.get("gpus"), "mapped_by": head.get("mapped_by"), "stops": log.stops}, indent=2))
    for name, s in (("computing", busy), ("sleeping", idle)):
        print(f"{name}: {s.samples} samples, median {s.util_median}%, mean {s.util_mean:.1f}%, p95 {s.util_p95}%")
    task = gpustats.summarise_task(log, gpus=1)
    print(f"whole run: peak memory {task.peak_mem_mib} MiB of {task.mem_total_mib} MiB, idle {task.idle_fraction:.0%}")
    ok = (busy.util_median or 0) > 80 and (idle.util_median if idle.util_median is not None else 100) < 5
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
