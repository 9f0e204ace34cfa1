"""`slurmflow results` and `slurmflow report` on a finished campaign of 1,000 and 10,000 trials,
against the plain pandas loop a researcher writes over the same files, measured in the same run.

The campaign is built through the library: the experiment (train -> eval by after_corr -> report
by after_any, objective test_accuracy max, a sweep of lr x seed) is composed and planned by
`launch.prepare`, its run directory written by `launch.write_run` (manifest, plan, launch.json,
provenance) and submitted through the submitter to a FakeSlurm (Intent and Submitted events, job
scripts). The fake's tasks are then given a finished history (2% of the trainings fail; their
evaluations are cancelled, never started), and each task that ran leaves the files its job would:
the wrapper's `<stage>.status.json`, a train metrics file (a 20-step loss and accuracy curve, then a
summary), `eval.json` and the metrics file the wrapper folds it into. 10,000 trials: 20,001 tasks,
about 50,000 files.

Measured, median of --repeats, every part once per round, the page cache warm:
  pandas loop    the baseline: per trial directory, json.loads of every metrics line (the last value
                 of each metric, summaries on top) and of both status files, one DataFrame row with
                 the trial's parameters, sorted by test_accuracy, written as CSV
  results        collect() + table.build() + table.to_csv(), in process: task times from the status
                 files (backend=None), and from the FakeSlurm's history() (one batched query for every
                 attempt, as `sacct --duplicates` answers it)
  results CLI    `python -m slurmflow results RUN --csv > file`: a new process, Python start included
  report         results/report.write() in process (FakeSlurm history), and `python -m slurmflow
                 report RUN`; the HTML file's size. Skipped while results/report.py is not there.
The CLI asks the Slurm the run records; where there is no sacct (here) it takes the times from the
status files, as `results` says ("times from").
Wall and CPU seconds, the ratio of each to the pandas loop's, time in the garbage collector, and
peak memory: VmHWM of a process of its own running the part once (and of each CLI process). The
slowest in-process slurmflow part at the largest size is profiled (cProfile, one more run).

Usage: python bench/results_bench.py [--trials 1000,10000] [--repeats 3] [--dir DIR] [--no-profile]
Campaigns are written to /dev/shm where there is one (a tmpfs: what is measured is reading, and the
file system's own cost is the same for both sides), else to $TMPDIR; --dir chooses.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import heapq
import importlib
import importlib.util
import io
import json
import math
import os
import pickle
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmflow.backends.base import Backend
from slurmflow.backends.fake import FakeSlurm, Outcome
from slurmflow.fsio import write_json_atomic
from slurmflow.results import table
from slurmflow.results.collect import RunResults, collect
from slurmflow.run import launch, schedulers
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.types import JobSpec, JobState

REPO = Path(__file__).resolve().parents[1]
LRS = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 0.00003, 0.00001)
STEPS = 20
FAIL_RATE = 0.02
REPORT_MODULE = "slurmflow.results.report"

EXPERIMENT = """\
# @package _global_
name: results-bench
sweep:
  lr: {lrs}
  seed: range({seeds})
lr: 0.1
seed: 0
objective: {{metric: test_accuracy, mode: max}}
stages:
  train:
    per_trial: true
    command: python train.py --lr ${{lr}} --seed ${{seed}}
    resources: {{gpus: 1, cpus: 1, time: 1h}}
  eval:
    per_trial: true
    after_corr: [train]
    command: python eval.py
    metrics_file: eval.json
    resources: {{partition: cpu, cpus: 1, time: 10m}}
  report:
    after_any: [eval]
    command: python -m slurmflow report "$SLURMFLOW_RUN_DIR"
    resources: {{partition: cpu, time: 5m}}
"""


def make_configs(root: Path, n: int) -> Path:
    cfg = root / "configs"
    (cfg / "experiment").mkdir(parents=True)
    (cfg / "config.yaml").write_text("defaults:\n  - experiment: bench\n  - _self_\n")
    lrs = ",".join(str(v) for v in LRS)
    (cfg / "experiment" / "bench.yaml").write_text(EXPERIMENT.format(lrs=lrs, seeds=n // len(LRS)))
    return cfg


# --- the campaign ---------------------------------------------------------------------------------


@dataclass
class Campaign:
    store: RunStore
    fake: FakeSlurm
    trials: int
    tasks: int
    failed: int
    build_s: float
    files: int = 0


@dataclass
class Ran:
    """A task's one attempt, as its wrapper and the scheduler saw it."""

    job_id: str  # 12_3
    raw_id: str  # SLURM_JOB_ID of the task
    index: int | None
    node: str | None
    submit: float
    start: float | None
    end: float
    state: JobState
    exit_code: int


def _line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, separators=(",", ":")) + "\n"  # as metrics.Writer writes a record


def _status(path: Path, stage: str, node_key: str, r: Ran) -> None:
    """The wrapper's status file of a task that ended (job/task.py)."""
    state = "completed" if r.state is JobState.COMPLETED else "failed"
    doc: dict[str, object] = {
        "stage": stage,
        "node": node_key,
        "job_id": r.raw_id,
        "array_task": None if r.index is None else str(r.index),
        "restart": 0,
        "host": r.node,
        "started": r.start,
        "state": state,
        "exit_code": r.exit_code,
        "ended": r.end,
    }
    write_json_atomic(path, doc)


def build(root: Path, n: int, seed: int = 0) -> Campaign:
    """A finished campaign of n trials (n rounded down to a multiple of len(LRS))."""
    t_build = time.perf_counter()
    rng = random.Random(seed)
    fake = FakeSlurm(deferred=True)  # submitted, never scheduled: the history is set below
    cfg = make_configs(root, n)
    prep = launch.prepare(cfg, "config", [], fake.cluster_info(), cwd=root)
    store = launch.write_run(prep, root / "runs", cwd=root, python=sys.executable, argv=["results_bench"])
    schedulers.record(store, schedulers.Chosen(fake, None), None)  # what later commands talk to: Slurm
    t0 = time.time() - 7 * 86400
    ids = launch.submit_run(store, fake)
    plan = prep.plan
    manifest = {t.index: t for t in store.trials()}

    gpu_slots = [(t0, f"gpu{1 + s // 4}") for s in range(8)]  # the fake's two 4-GPU nodes
    heapq.heapify(gpu_slots)
    ran: dict[tuple[str, int], Ran] = {}  # (stage, trial) -> its attempt
    failed = 0
    files = 0

    def record(r: Ran) -> None:
        task = fake.tasks[r.job_id]
        task.state, task.exit_code, task.node = r.state, r.exit_code, r.node
        task.submitted, task.started, task.finished = r.submit, r.start or 0.0, r.end
        task.reason = "None" if r.state is JobState.COMPLETED else "NonZeroExitCode"

    for node in plan.nodes:
        if not node.array:
            continue
        base = ids[node.key]
        for i in range(node.size):
            trial = manifest[node.offset + i]
            job_id = f"{base}_{i}"
            raw = fake.tasks[job_id].raw_id
            if node.stage == "train":
                free, host = heapq.heappop(gpu_slots)
                start = free + rng.uniform(1, 20)
                fails = rng.random() < FAIL_RATE
                end = start + rng.uniform(60, 120) if fails else start + rng.uniform(240, 480)
                heapq.heappush(gpu_slots, (end, host))
                state = JobState.FAILED if fails else JobState.COMPLETED
                r = Ran(job_id, raw, i, host, t0, start, end, state, 1 if fails else 0)
                failed += fails
            else:
                train = ran[("train", trial.index)]
                if train.state is not JobState.COMPLETED:  # after_corr never satisfied: cancelled
                    r = Ran(job_id, raw, i, None, t0, None, train.end, JobState.CANCELLED, 0)
                else:
                    start = train.end + rng.uniform(1, 30)
                    r = Ran(job_id, raw, i, "cpu1", t0, start, start + rng.uniform(20, 60), JobState.COMPLETED, 0)
            ran[(node.stage, trial.index)] = r
            record(r)
            if r.start is None:
                continue
            d = store.trial_dir(trial)
            (d / "metrics").mkdir(parents=True, exist_ok=True)
            _status(d / f"{node.stage}.status.json", node.stage, node.key, r)
            attempt = f"{job_id}.0.0"
            lr = float(dict(o.split("=", 1) for o in trial.overrides)["lr"])
            quality = 1.0 - abs(math.log10(lr) + 2.5) / 5  # best near lr=0.003
            if node.stage == "train":
                steps = rng.randint(4, 15) if r.state is JobState.FAILED else STEPS
                lines = []
                loss, acc = 2.3, 0.1
                for step in range(steps):
                    loss = 2.3 * math.exp(-(step + 1) * quality / 6) + rng.gauss(0, 0.02)
                    acc = min(0.99, 0.1 + 0.85 * quality * (1 - math.exp(-(step + 1) / 5)) + rng.gauss(0, 0.01))
                    at = r.start + (r.end - r.start) * (step + 1) / (STEPS + 1)
                    lines.append(_line({"t": at, "step": step, "m": {"loss": loss, "accuracy": acc}}))
                if r.state is JobState.COMPLETED:
                    lines.append(_line({"t": r.end - 1, "final": {"train_loss": loss, "train_accuracy": acc}}))
                (d / "metrics" / f"train.{attempt}.jsonl").write_text("".join(lines))
                files += 2
            else:
                test_acc = 0.1 + 0.85 * quality + 0.04 * rng.random()  # quality <= 1: below 0.99
                doc = {"test_accuracy": test_acc, "test_loss": -math.log(max(test_acc, 1e-3))}
                write_json_atomic(d / "eval.json", doc)  # what the job writes (metrics_file)
                folded = _line({"t": r.end, "final": doc})  # metrics.pick_up's summary of it
                (d / "metrics" / f"eval.{attempt}.file.jsonl").write_text(folded)
                files += 3

    last_eval = max(r.end for (stage, _), r in ran.items() if stage == "eval")
    for node in plan.nodes:
        if node.array:
            continue
        job_id = ids[node.key]
        r = Ran(job_id, job_id, None, "cpu1", t0, last_eval + 5, last_eval + 35, JobState.COMPLETED, 0)
        record(r)
        where = store.path("stages", node.stage)
        where.mkdir(parents=True, exist_ok=True)
        _status(where / f"{node.stage}.status.json", node.stage, node.key, r)
        files += 1
    tasks = sum(node.size if node.array else 1 for node in plan.nodes)
    return Campaign(store, fake, len(manifest), tasks, failed, time.perf_counter() - t_build, files)


# --- what is measured ----------------------------------------------------------------------------


def pandas_baseline(run: Path, out: Path) -> int:
    """What a researcher writes: a loop over the trial directories, a DataFrame, a sort, a CSV."""
    import pandas as pd

    params: dict[int, dict[str, str]] = {}
    with open(run / "trials.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            params[doc["index"]] = dict(o.split("=", 1) for o in doc["overrides"])
    rows: list[dict[str, Any]] = []
    for entry in os.scandir(run / "trials"):
        trial = int(entry.name)
        row: dict[str, Any] = {"trial": trial, **params[trial]}
        for stage in ("train", "eval"):
            try:
                with open(os.path.join(entry.path, f"{stage}.status.json")) as f:
                    status = json.load(f)
            except FileNotFoundError:
                row[f"{stage}_state"] = "cancelled"
                continue
            row[f"{stage}_state"] = status["state"]
            row[f"{stage}_elapsed_s"] = status["ended"] - status["started"]
        metrics_dir = os.path.join(entry.path, "metrics")
        for name in sorted(os.listdir(metrics_dir)):
            with open(os.path.join(metrics_dir, name)) as f:
                for line in f:
                    rec = json.loads(line)
                    row.update(rec.get("m") or rec.get("final") or {})
        rows.append(row)
    df = pd.DataFrame(rows).sort_values("test_accuracy", ascending=False, na_position="last")
    df.to_csv(out, index=False)
    return len(df)


def slurmflow_results(store: RunStore, backend: Backend | None, out: Path) -> RunResults:
    results = collect(store, backend)
    out.write_text(table.to_csv(table.build([results])))
    return results


def report_module() -> Any | None:
    """results/report.py, where it exists (and has `write`)."""
    if importlib.util.find_spec(REPORT_MODULE) is None:
        return None
    module = importlib.import_module(REPORT_MODULE)
    return module if hasattr(module, "write") else None


def slurmflow_report(store: RunStore, backend: Backend | None, out: Path) -> RunResults:
    module = report_module()
    assert module is not None
    results = collect(store, backend)
    module.write(results, out)
    return results


# key -> (label, given the FakeSlurm (else backend=None), what it runs, the file it writes)
InProcess = Callable[[RunStore, "Backend | None", Path], object]
IN_PROCESS: dict[str, tuple[str, bool, InProcess, str]] = {
    "pandas": ("pandas loop (baseline)", False, lambda s, _b, out: pandas_baseline(s.root, out), "pandas.csv"),
    "results": ("results, status files", False, slurmflow_results, "results.csv"),
    "results-fake": ("results, FakeSlurm history", True, slurmflow_results, "results-fake.csv"),
    "report-fake": ("report, FakeSlurm history", True, slurmflow_report, "report.html"),
}


def _finished(spec: JobSpec, index: int | None, restarts: int) -> Outcome:
    return Outcome()  # never called: the campaign has ended; a module-level function pickles


@dataclass
class Usage:
    seconds: float
    peak_mb: float | None  # the process's peak resident set
    grew_mb: float | None = None  # of which the part's own work (its peak over the process's before it)
    cpu: float = 0.0


def vm_hwm_mb() -> float | None:
    """This process's peak resident set since it began (Linux: VmHWM). getrusage's ru_maxrss
    would not do: a process started from this one inherits its peak across exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None


# `python -m slurmflow ...` as -m runs it (runpy), then its own peak resident set on stderr.
CLI = """
import runpy, sys
sys.argv[0] = "slurmflow"
try:
    runpy.run_module("slurmflow", run_name="__main__", alter_sys=True)
finally:
    try:
        with open("/proc/self/status") as f:
            kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
        sys.stderr.write("\\nbench-peak-kb " + kb + "\\n")
    except (OSError, StopIteration):
        pass
"""


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _subprocess(argv: list[str], stdout: Path) -> tuple[float, float, str]:
    """A process end to end (Python start included): its seconds, its CPU seconds, its stderr."""
    with open(stdout, "wb") as out:
        cpu, t = _children_cpu(), time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True, check=False)
        seconds, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("bench-peak-kb")]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else ''}")
    return seconds, cpu, done.stderr


def cli(args: list[str], stdout: Path) -> Usage:
    seconds, cpu, err = _subprocess([sys.executable, "-c", CLI, *args], stdout)
    kb = [line.split()[1] for line in err.splitlines() if line.startswith("bench-peak-kb ")]
    return Usage(seconds, int(kb[-1]) / 1024 if kb else None, cpu=cpu)


def child(key: str, run: Path, fake: Path, out: Path) -> None:
    """One in-process part, once, in this fresh process: its memory (printed as JSON)."""
    if key == "pandas":
        import pandas  # noqa: F401  imported before the part, as the in-process rounds had it
    if key.startswith("report"):
        report_module()
    _, with_fake, fn, _ = IN_PROCESS[key]
    store = RunStore(run)
    # The FakeSlurm the parent process pickled a moment ago, into its own temporary directory.
    backend = pickle.loads(fake.read_bytes()) if with_fake else None  # noqa: S301
    before = vm_hwm_mb()
    t = time.perf_counter()
    fn(store, backend, out)
    seconds = time.perf_counter() - t
    peak = vm_hwm_mb()
    grew = None if peak is None or before is None else peak - before
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "grew_mb": grew}))


@dataclass
class Part:
    key: str
    name: str
    run: Callable[[], object] | None = None  # in process; None: a CLI part
    argv: list[str] = field(default_factory=list)  # a CLI part's arguments: `slurmflow ARGV`
    out: Path | None = None
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds (of the process, for a CLI part)
    gc: list[float] = field(default_factory=list)  # seconds in the garbage collector (in process)
    usage: Usage | None = None  # in process: from one more run in a process of its own
    baseline: bool = False
    source: str | None = None  # where the last run's task times came from
    error: str | None = None  # what stopped it; it is not run again
    memory_error: str | None = None  # why its own process gave no peak

    def once(self) -> None:
        if self.error is not None:
            return
        try:
            if self.run is not None:
                collector = GcTime()
                with collector:
                    cpu, t = time.process_time(), time.perf_counter()
                    result = self.run()
                    self.times.append(time.perf_counter() - t)
                    self.cpu.append(time.process_time() - cpu)
                self.gc.append(collector.seconds)
                if isinstance(result, RunResults):
                    self.source = result.source
            else:
                assert self.out is not None
                done = cli(self.argv, self.out)
                self.times.append(done.seconds)
                self.cpu.append(done.cpu)
                if self.usage is None or (done.peak_mb or 0.0) > (self.usage.peak_mb or 0.0):
                    self.usage = done
        except Exception as exc:
            if self.baseline:
                raise
            text = str(exc).strip().splitlines()
            self.error = f"{type(exc).__name__}: {text[-1] if text else ''}"

    def memory(self, run: Path, fake: Path, out: Path) -> None:
        """The part once more, alone in a new process: its peak resident set."""
        if self.run is None or self.error is not None:
            return
        argv = [sys.executable, __file__, "--child", self.key, "--run", str(run), "--fake", str(fake)]
        try:
            _subprocess([*argv, "--out", str(out / f"child-{self.key}")], out / f"child-{self.key}.json")
            doc = json.loads((out / f"child-{self.key}.json").read_text())
        except (RuntimeError, ValueError) as exc:
            self.memory_error = str(exc)
            return
        self.usage = Usage(doc["seconds"], doc["peak_mb"], doc["grew_mb"])

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


class GcTime:
    """Seconds spent in the garbage collector while in this context (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


def profile(fn: Callable[[], object], top: int = 10) -> str:
    """One run under cProfile: the `top` functions by own time, then by time including callees."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out: list[str] = []
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        # Callers in this file (the part's own wrapper) left out: they only say "all of it".
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(r"^(?!results_bench\.py)", top)
        lines = buf.getvalue().splitlines()
        if not out:
            out.append("  " + next((line.strip() for line in lines if "function calls" in line), ""))
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        out.append(f"  by {order}:")
        out.extend("  " + line for line in lines[start:] if line.strip())
    return "\n".join(out)


def check(baseline_csv: Path, results_csv: Path) -> str:
    """Both tables have every trial and the same best test_accuracy (the outputs agree)."""
    with open(baseline_csv) as f:
        base = list(csv.DictReader(f))
    with open(results_csv) as f:
        ours = list(csv.DictReader(f))
    if len(base) != len(ours):
        raise RuntimeError(f"row counts differ: pandas {len(base)}, slurmflow {len(ours)}")
    if float(base[0]["test_accuracy"]) != float(ours[0]["test_accuracy"]) or ours[0]["rank"] != "1":
        raise RuntimeError(f"best trial differs: pandas {base[0]['trial']}, slurmflow {ours[0]['trial']}")
    best = f"{ours[0]['trial']}, test_accuracy {float(ours[0]['test_accuracy']):.4f}"
    return f"checked: pandas and slurmflow agree: {len(ours):,} rows, best trial {best}"


def parts(camp: Campaign, out: Path) -> list[Part]:
    store, run = camp.store, camp.store.root
    found: list[Part] = []
    have_report = report_module() is not None
    for key, (name, with_fake, fn, file) in IN_PROCESS.items():
        if key.startswith("report") and not have_report:
            continue
        backend = camp.fake if with_fake else None

        def run_it(fn: InProcess = fn, backend: Backend | None = backend, file: str = file) -> object:
            return fn(store, backend, out / file)

        found.append(Part(key, name, run_it, baseline=key == "pandas"))
        if key == "results-fake":
            argv = ["results", str(run), "--csv"]
            found.append(Part("results-cli", "results CLI --csv", argv=argv, out=out / "cli.csv"))
    if have_report:
        argv = ["report", str(run), "--out", str(out / "cli.html")]
        found.append(Part("report-cli", "report CLI", argv=argv, out=out / "cli-report.txt"))
    return found


def warm_up(root: Path) -> str:
    """Every in-process part once on a campaign of 10 trials: their lazy imports (pandas, the
    GPU reader, the report) are paid here, not in the first measured round. Returns where the
    CLI takes the task times from (`results --json`)."""
    camp = build(root, len(LRS))
    (root / "out").mkdir()
    for part in parts(camp, root / "out"):
        if part.run is not None:
            part.once()
    cli(["results", str(camp.store.root), "--json"], root / "out" / "cli.json")
    source: str = json.loads((root / "out" / "cli.json").read_text())["runs"][0]["times_from"]
    return source


def measure(
    n: int, root: Path, repeats: int, do_profile: bool, cli_source: str
) -> tuple[Campaign, list[Part], list[str], str | None]:
    camp = build(root, n)
    out = root / "out"
    out.mkdir()
    measured = parts(camp, out)
    gc.collect()
    gc.freeze()  # the bench's own objects (the FakeSlurm's 20,000 tasks) are no collector's work
    for _ in range(repeats):  # interleaved: every part once per round
        for part in measured:
            part.once()
    gc.unfreeze()
    fake = root / "fake.pickle"
    camp.fake.program = _finished
    fake.write_bytes(pickle.dumps(camp.fake))
    for part in measured:
        part.memory(camp.store.root, fake, out)
    notes = [check(out / "pandas.csv", out / "results.csv")]
    if (out / "cli.csv").exists():
        check(out / "pandas.csv", out / "cli.csv")
    by_source: dict[str, list[str]] = {}
    for p in measured:
        source = p.source if p.run is not None else cli_source
        if source and p.times:
            by_source.setdefault(source, []).append(p.name)
    for source, names in by_source.items():
        notes.append(f"task times from {source}: {'; '.join(names)}")
    if cli_source == "task status files":
        notes.append("(the CLI asks the Slurm the run records: no sacct on this machine, so it falls back)")
    sizes = [(name, out / f) for name, f in (("in process", "report.html"), ("CLI", "cli.html"))]
    html = [f"{name} {p.stat().st_size / 2**20:.1f} MiB" for name, p in sizes if p.exists()]
    if html:
        notes.append("report.html: " + ", ".join(html))
    prof = None
    if do_profile:
        ran = [p for p in measured if p.run is not None and not p.baseline and p.times]
        if ran:
            slowest = max(ran, key=lambda p: p.median)
            assert slowest.run is not None
            prof = f"cProfile of {slowest.name}, {camp.trials:,} trials (one run):\n" + profile(slowest.run)
    return camp, measured, notes, prof


def default_dir() -> Path | None:
    """A tmpfs where there is one: 60,000 small files are written and removed per 10,000 trials,
    which on a disk with online discard takes minutes of its own."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * 2**30 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", default="1000,10000", help="campaign sizes, comma-separated (default 1000,10000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each part; the median is shown (default 3)")
    ap.add_argument("--dir", type=Path, default=None, help="build the campaigns here (default: /dev/shm, else $TMPDIR)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile of the slowest slurmflow part")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--fake", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.run, args.fake, args.out)
        return 0
    sizes = [int(s.replace("_", "")) for s in args.trials.split(",") if s.strip()]
    where = args.dir or default_dir()
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), Python {sys.version.split()[0]}, "
        f"median of {args.repeats}, campaigns in {where or tempfile.gettempdir()} (page cache warm: just written)"
    )
    if report_module() is None:
        print(f"report: skipped: {REPORT_MODULE} (with write()) is not there yet; results only")
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        cli_source = warm_up(Path(tmp))
    profiles: list[str] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            profiled = not args.no_profile and n == max(sizes)
            camp, measured, notes, prof = measure(n, Path(tmp), args.repeats, profiled, cli_source)
        print()
        print(
            f"{camp.trials:,} trials, {camp.tasks:,} tasks ({camp.failed} trainings failed), "
            f"{camp.files:,} files; built in {camp.build_s:.1f} s"
        )
        ref = next(p for p in measured if p.baseline)
        base, base_cpu = ref.median, ref.median_cpu
        print(
            f"  {'':<27} {'wall s':>7} {'vs pandas':>9} {'CPU s':>7} {'vs pandas':>9} "
            f"{'GC s':>5} {'RSS MiB':>8} {'work':>5}"
        )
        for p in measured:
            if p.error is not None:
                print(f"  {p.name:<27} failed: {p.error}")
                continue
            gcs = f"{statistics.median(p.gc):.2f}" if p.gc else "-"
            rss = "-" if p.usage is None or p.usage.peak_mb is None else f"{p.usage.peak_mb:.0f}"
            grew = "-" if p.usage is None or p.usage.grew_mb is None else f"{p.usage.grew_mb:.0f}"
            print(
                f"  {p.name:<27} {p.median:>7.2f} {p.median / base:>8.2f}x {p.median_cpu:>7.2f} "
                f"{p.median_cpu / base_cpu:>8.2f}x {gcs:>5} {rss:>8} {grew:>5}"
            )
        for p in measured:
            if p.memory_error:
                print(f"  {p.name}: no peak RSS: {p.memory_error}")
        for note in notes:
            print(f"  {note}")
        if prof:
            profiles.append(prof)
    print()
    print("vs pandas: the part's median over the pandas loop's, same campaign, same rounds; CPU s is the")
    print("process's CPU time (the CLI process's own for a CLI part), less disturbed than wall time by other")
    print("load. CLI parts include Python start and imports; in-process parts and the baseline do not (a")
    print("10-trial warm-up pays them). GC s: time in the garbage collector (in process). RSS MiB: peak")
    print("resident set (VmHWM) of an in-process part run once more in a process of its own, with what it")
    print("imports (pandas for the baseline) and the FakeSlurm unpickled where used; work: how far the part")
    print("raised that process's peak. A CLI part: its own process's peak.")
    for prof in profiles:
        print()
        print(prof)
    print(f"\nbench: {time.perf_counter() - started:.0f} s in all (load {os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
