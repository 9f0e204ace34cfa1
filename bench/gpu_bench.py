"""Cost of the in-job GPU sampler: CPU seconds per hour of sampling and bytes of samples per GPU-hour.

Measured in this process, with the scripted source (this machine has no GPU; `--source nvml` on a
GPU node measures NVML's own reads too):
  direct    the sampler at 1 Hz for --seconds, CPU time of the process over that window
  per read  the sampler at 50 Hz for a few seconds: CPU per sample, times 3,600 samples an hour
  bytes     the sample file's size per GPU-sample, times 3,600
Baselines, measured in the same run:
  a logger that starts a process per sample, as an `nvidia-smi` loop in a job script does; `true`
  stands in for nvidia-smi, so this is a lower bound (nvidia-smi itself takes ~14 ms per start);
  the CSV line `nvidia-smi --query-gpu=... --format=csv` writes per GPU-sample.

Usage: python bench/gpu_bench.py [--seconds 30] [--gpus 4] [--source fake:busy]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from slurmflow.gpu.sampler import Sampler
from slurmflow.model import GpuSampling

CORE_HOUR = 3600.0
NVIDIA_SMI_LINE = "2026/11/23 15:41:33.123, 0, 97 %, 40123 MiB, 81559 MiB, 312.45 W, 65\n"


def cpu() -> float:
    """CPU seconds of this process (every thread) and of its finished children, in microseconds."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_sampler(directory: Path, interval: float, seconds: float, gpus: int, source: str) -> tuple[float, int, int]:
    """(CPU seconds, samples, bytes) of one sampler run."""
    path = directory / f"gpu.{interval}.csv"
    env = {"SLURM_JOB_GPUS": ",".join(str(i) for i in range(gpus))}
    settings = GpuSampling(interval=interval, flush=10.0, source=source)
    before = cpu()
    sampler = Sampler(path, settings, env=env, meta={"host": "bench"}).start()
    time.sleep(seconds)
    sampler.stop()
    used = cpu() - before
    if sampler.stopped:
        raise SystemExit(f"the sampler stopped: {sampler.stopped}")
    return used, sampler.samples, path.stat().st_size


def spawning_logger(seconds: float, interval: float) -> tuple[float, int]:
    before, n = cpu(), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        subprocess.run(["true"], check=True)
        n += 1
        time.sleep(interval)
    return cpu() - before, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the 1 Hz run")
    ap.add_argument("--gpus", type=int, default=4, help="GPUs per task")
    ap.add_argument("--source", default="fake:busy", help="fake:busy here; nvml on a GPU node")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        direct_cpu, direct_n, direct_bytes = run_sampler(d, 1.0, args.seconds, args.gpus, args.source)
        fast_cpu, fast_n, fast_bytes = run_sampler(d, 0.02, 5.0, args.gpus, args.source)
        base_cpu, base_n = spawning_logger(min(args.seconds, 10.0), 0.1)
    per_hour_direct = direct_cpu / args.seconds * CORE_HOUR
    per_sample = fast_cpu / fast_n
    per_hour_model = per_sample * CORE_HOUR
    base_per_hour = base_cpu / base_n * CORE_HOUR
    bytes_per_gpu_sample = fast_bytes / (fast_n * args.gpus)
    print(f"sampler, {args.gpus} GPUs per task, source {args.source}")
    print(f"  1 Hz for {args.seconds:.0f} s: {direct_n} samples, {direct_cpu:.3f} CPU s")
    print(
        f"  CPU per hour at 1 Hz: {per_hour_direct:.2f} s measured directly "
        f"({per_hour_direct / CORE_HOUR:.4%} of a core), aim < 18 s (0.5%)"
    )
    print(
        f"  CPU per sample (50 Hz run, {fast_n} samples): {per_sample * 1e3:.3f} ms -> {per_hour_model:.2f} s per hour"
    )
    print(f"  baseline, a process per sample (lower bound of nvidia-smi): {base_per_hour:.2f} CPU s per hour")
    print(f"  ratio baseline / slurmflow (per sample): {base_per_hour / per_hour_model:.1f}x")
    per_gpu_hour = bytes_per_gpu_sample * 3600 / 1024
    print(f"  bytes per GPU-sample: {bytes_per_gpu_sample:.1f} -> {per_gpu_hour:.0f} KiB per GPU-hour")
    smi = len(NVIDIA_SMI_LINE)
    print(
        f"  baseline, nvidia-smi CSV: {smi} bytes per GPU-sample -> {smi * 3600 / 1024:.0f} KiB per GPU-hour; "
        f"ratio {smi / bytes_per_gpu_sample:.2f}x"
    )
    print(f"  (the 1 Hz run wrote {direct_bytes} bytes)")


if __name__ == "__main__":
    main()
