"""The GPU sampler inside real jobs on the mini cluster, with the scripted NVML source (the cluster's
GPUs are device files): samples of the allocated GPU, summaries, idle events in `status`, an idle
task cancelled in Slurm and left alone by the monitor, and a node without NVML."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurmflow.gpu import stats as gpustats
from slurmflow.slurm.types import JobState
from tests.integration.test_launch import backend, launch_json, slurmflow, wait_final, workdir

pytestmark = pytest.mark.integration
__all__ = ["workdir"]

RECORD = (
    "python -c \"import os, sys, time; open(os.environ['SLURMFLOW_WORKDIR'] + '/alloc.' + sys.argv[1], 'w')"
    ".write(os.environ.get('SLURM_JOB_GPUS', '')); time.sleep(float(sys.argv[2]))\""
)
GPUJOBS = f"""# @package _global_
name: gpujobs
sweep:
  seed: range(2)
seed: 0
stages:
  busy:
    per_trial: true
    command: {RECORD} busy 8
    resources: {{gpus: 1, cpus: 1, time: 5m}}
    gpu_sampling: {{interval: 0.5, flush: 1, source: fake:busy}}
  warned:
    per_trial: true
    command: {RECORD} warned 10
    resources: {{gpus: 1, cpus: 1, time: 5m}}
    gpu_sampling: {{interval: 0.5, flush: 1, source: 'fake:busy*4,idle'}}
    gpu_idle: {{below: 5, for: 3s, action: warn}}
  wasted:
    per_trial: true
    command: {RECORD} wasted 240
    resources: {{gpus: 1, cpus: 1, time: 5m}}
    gpu_sampling: {{interval: 0.5, flush: 1, source: fake:idle}}
    gpu_idle: {{below: 5, for: 4s, action: cancel}}
  nonvml:
    command: {RECORD} nonvml 2
    resources: {{gpus: 1, cpus: 1, time: 5m}}
"""


def test_sampler_in_real_jobs_summaries_idle_warn_and_cancel(mini_cluster: str, workdir: Path) -> None:
    (workdir / "configs" / "experiment" / "gpujobs.yaml").write_text(GPUJOBS)
    doc = launch_json(mini_cluster, workdir, "experiment=gpujobs")
    nodes: dict[str, str] = doc["nodes"]
    run_dir, run_id = Path(str(doc["run_dir"])), str(doc["run_id"])
    started = time.monotonic()
    jobs = wait_final(mini_cluster, list(nodes.values()), timeout=200)
    took = time.monotonic() - started

    states = {k: j.state for k, j in jobs.items()}
    for stage in ("busy", "warned"):
        assert [states[f"{nodes[stage + '.0']}_{i}"] for i in (0, 1)] == [JobState.COMPLETED] * 2, states
    assert states[nodes["nonvml"]] is JobState.COMPLETED
    # The idle rule cancelled both wasted tasks long before their 240 s command would have ended.
    assert [states[f"{nodes['wasted.0']}_{i}"] for i in (0, 1)] == [JobState.CANCELLED] * 2, states
    assert took < 150

    trials = sorted(p for p in (run_dir / "trials").iterdir())
    for trial in trials:
        # Only the allocated GPU is sampled: its UUID is the one SLURM_JOB_GPUS names.
        log = gpustats.parse((trial / "gpu.busy.csv").read_text())
        allocated = (trial / "alloc.busy").read_text().strip()
        assert [s.meta["uuid"] for s in log.series] == [f"GPU-fake-mini-{allocated}"], log.segments
        summary = gpustats.summarise_task(log, gpus=1)
        assert summary.samples >= 10 and summary.util_mean is not None and summary.util_mean >= 90, summary
        assert summary.idle_fraction == 0 and not log.stops
        # The wrapper left its summary beside the samples; `slurmflow gpu` reads that instead.
        cache = json.loads((trial / "gpu.busy.summary.json").read_text())
        assert cache["source_size"] == (trial / "gpu.busy.csv").stat().st_size
        assert cache["summary"]["samples"] == summary.samples
        status = json.loads((trial / "wasted.status.json").read_text())
        assert status["state"] == "cancelled" and "GPU idle" in status["reason"], status
    no_nvml = gpustats.parse((run_dir / "stages" / "nonvml" / "gpu.nonvml.csv").read_text())
    assert no_nvml.stops and no_nvml.stops[0].startswith("NVML did not start"), no_nvml.stops

    # Events: one warn per warned task, one cancel per wasted task, shown by status.
    st = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs", "--json")
    assert st.returncode == 0, st.stderr
    idle = [a for a in json.loads(st.stdout)["actions"] if a["event"] == "gpu_idle"]
    got = sorted((a["node"], a["action"]) for a in idle)
    assert got == [("warned.0", "warn")] * 2 + [("wasted.0", "cancel")] * 2, idle
    assert all("below 5% utilisation" in a["why"] for a in idle)
    table = slurmflow(mini_cluster, workdir, "status", run_id, "--runs-dir", "runs")
    assert "gpu_idle (cancel)" in table.stdout, table.stdout

    # The monitor leaves a task its own idle rule cancelled alone.
    mon = slurmflow(mini_cluster, workdir, "monitor", run_id, "--runs-dir", "runs", "--once", "--json")
    assert mon.returncode == 0, mon.stderr
    assert not [line for line in mon.stdout.splitlines() if "wasted" in line], mon.stdout
    after = backend(mini_cluster).query([nodes["wasted.0"]]).by_id()
    assert after[f"{nodes['wasted.0']}_0"].state is JobState.CANCELLED

    # `slurmflow gpu`: per task, per stage, campaign; JSON and a plot.
    gpu = slurmflow(mini_cluster, workdir, "gpu", run_id, "--runs-dir", "runs", "--json")
    assert gpu.returncode == 0, gpu.stderr
    report = json.loads(gpu.stdout)
    assert report["stages"]["busy"]["tasks"] == 2 and report["stages"]["busy"]["util_p95"] >= 90
    assert report["stages"]["wasted"]["idle_fraction"] == 1.0 and report["stages"]["wasted"]["gpu_hours_used"] == 0
    assert report["campaign"]["gpu_hours_used"] < report["campaign"]["gpu_hours_allocated"]
    assert any("NVML did not start" in why for why in report["campaign"]["sampler_stopped"])
    assert len(report["idle_events"]) == 4
    table = slurmflow(mini_cluster, workdir, "gpu", run_id, "--runs-dir", "runs")
    assert table.returncode == 0 and "per stage" in table.stdout and "█" in table.stdout, table.stdout
    for suffix in ("png", "html"):
        out = workdir / f"gpu.{suffix}"
        plot = subprocess.run(
            [sys.executable, "-m", "slurmflow", "gpu", str(run_dir), "--plot", str(out)],
            capture_output=True,
            text=True,
        )
        assert plot.returncode == 0, plot.stderr
    assert (workdir / "gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (workdir / "gpu.html").read_text()
    assert "<svg" in page and "wasted" in page and "stayed below 5%" in page
