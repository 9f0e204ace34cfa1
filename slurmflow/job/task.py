"""The in-job wrapper: `python -m slurmflow.job RUN_DIR NODE_KEY`, the body of every script.

It finds its trial from the manifest and its array index (plus the chunk's offset), composes the
trial's config from the run's snapshot of the config directory, resolves the stage's command
(`trialcfg.stage_argv`), runs it, and records the outcome in the trial directory.

A `command:` is a bash line, run as `bash -c`, as an sbatch script would run it: `&&`, `|`, `>`,
`cd`, `$SLURM_ARRAY_TASK_ID` work, and each ${...} value arrives as one quoted word. Its exit
status is bash's: the line's last command, without `set -e` or `pipefail`, as in an sbatch script
(a line that wants them starts with `set -euo pipefail;`). An `argv:` list runs without a shell.

`python` is the interpreter slurmflow runs under: its directory leads PATH. That reaches `python`
wherever the line names it (after `cd x &&`, in a pipe, under `xargs` or `srun`, in a
`#!/usr/bin/env python` script), which no alias or shell function would; a line that activates
another environment gets that environment's `python`, as it would expect.

Signals: the command runs in its own session. SIGTERM and SIGINT (scancel, the time limit, ^C)
go to its whole process group; the checkpoint warning (USR1, USR2 or HUP) goes to bash and the
commands it is running, not to their own children (a data loader's workers would die of it), and
bash outlives it (trialcfg.SHELL_PREAMBLE), so a program checkpoints before bash exits. When the
line ends, whatever it left running is killed, as Slurm does when a batch script ends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slurmflow.errors import SlurmflowError, UsageError
from slurmflow.experiment import appargs, trialcfg
from slurmflow.fsio import write_atomic, write_json_atomic
from slurmflow.model import Plan, Stage
from slurmflow.rundir import metrics
from slurmflow.rundir.events import GpuIdle
from slurmflow.rundir.store import RunStore
from slurmflow.slurm.runner import Child, Runner, SubprocessRunner, run_child

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from slurmflow.gpu import sampler as gpu

# Paid by every task of every sweep: Hydra (slurmflow.experiment.config) is imported only for a sweep over a
# config group, and the GPU sampler (slurmflow.gpu.sampler, slurmflow.gpu.usage) only by GPU stages.


def _write_status(path: Path, doc: dict[str, object]) -> None:
    write_json_atomic(path, doc)


@dataclass
class Prepared:
    """Everything a task needs before it runs its stage."""

    stage: Stage
    cfg: DictConfig
    env: dict[str, str]
    cwd: str
    status_path: Path
    status: dict[str, object]
    store: RunStore
    node: str
    clock: Callable[[], float] = time.time  # what the task's status and events are stamped with
    launch_dir: str = ""  # where the launch ran (cwd is the trial directory under hydra.job.chdir)


def prepare(
    store: RunStore,
    key: str,
    array_index: int | None,
    plan: Plan | None = None,
    clock: Callable[[], float] = time.time,
) -> Prepared:
    """Find the trial (chunk offset + array index), compose its config from the run's snapshot,
    and build the environment the stage runs in."""
    plan = plan or store.plan()
    node = plan.node(key)
    stage = plan.stages[node.stage]
    launch = store.read_json("launch.json")
    overrides = list(launch["base_overrides"])
    env = dict(os.environ)
    index: int | None = None
    trial_values: tuple[tuple[str, object], ...] | None = None
    if node.array:
        index = node.offset + (array_index or 0)
        trial = store.read_trial(index)
        trial_values = trial.values
        overrides += trial.overrides
        workdir = store.trial_dir(trial)
        env.update(
            SLURMFLOW_TRIAL_ID=trial.id,
            SLURMFLOW_TRIAL_INDEX=str(index),
            SLURMFLOW_TRIAL_DIR=str(workdir),
            SLURMFLOW_TRIAL_OVERRIDES=json.dumps(list(trial.overrides)),
        )
    else:
        workdir = store.path("stages", stage.name)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / (f"{stage.name}.config.yaml" if not node.array else "config.yaml")
    # `python` in a stage command is the interpreter slurmflow runs under (its venv on the cluster):
    # see the module docstring.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    env.update(
        SLURMFLOW_RUN_DIR=str(store.root),
        SLURMFLOW_RUN_ID=store.run_id,
        SLURMFLOW_STAGE=stage.name,
        SLURMFLOW_CONFIG=str(cfg_path),
        SLURMFLOW_WORKDIR=str(workdir),
        SLURMFLOW_CHECKPOINT_DIR=str(workdir),
    )
    if launch.get("hydra_app"):  # a Hydra app's job composes its own config (experiment/hydra_job.py)
        cfg = trialcfg.empty()
        env.pop("SLURMFLOW_CONFIG")
    else:
        cfg = _trial_config(store, launch, index, overrides, trial_values)
        with job_environ(env):  # ${oc.env:SLURMFLOW_TRIAL_DIR} and the like resolve as in the job
            write_atomic(cfg_path, trialcfg.resolved_yaml(cfg))  # 0600: it may hold ${oc.env:...} values
            if node.array:
                trialcfg.write_hydra_dir(workdir / ".hydra", cfg, overrides)
    # hydra.job.chdir: true in the experiment: each trial's tasks run in its trial directory.
    cwd = str(workdir) if launch.get("chdir") and node.array else launch["cwd"]
    status: dict[str, object] = {
        "stage": stage.name,
        "node": node.key,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        "host": socket.gethostname(),
        "started": clock(),
        "state": "running",
    }
    prepared = Prepared(
        stage, cfg, env, cwd, workdir / f"{stage.name}.status.json", status, store, node.key, clock, launch["cwd"]
    )
    _write_status(prepared.status_path, status)
    return prepared


@contextlib.contextmanager
def job_environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ as the stage will see it, while its config is resolved (`${oc.env:...}` is
    read at job time, never at launch), then as it was."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _trial_config(
    store: RunStore,
    launch: dict[str, Any],
    index: int | None,
    overrides: list[str],
    trial_values: tuple[tuple[str, object], ...] | None = None,
) -> DictConfig:
    """The trial's config: experiment.yaml plus its values where the sweep changes only values
    (trialcfg.py), or a search trial's own values; composed by Hydra from the run's snapshot
    otherwise."""
    if trial_values is not None:
        return trialcfg.build(store.path("experiment.yaml"), list(trial_values))
    axes = launch.get("values")
    if axes is not None:
        values = trialcfg.trial_values([(k, v) for k, v in axes], index) if index is not None else []
        return trialcfg.build(store.path("experiment.yaml"), values)
    from slurmflow.experiment import config

    return config.trial_config(store.path("config"), launch["config_name"], overrides)


def _being_preempted(runner: Runner, job: str) -> bool:
    """Whether the controller has started preempting this job (`PreemptTime` set in scontrol's
    record of it: `None` while it is not); a query that fails counts as no."""
    done = runner.run(["scontrol", "show", "job", "-o", job], check=False)
    found = re.search(r"\bPreemptTime=(\S+)", done.stdout if done.returncode == 0 else "")
    return found is not None and found.group(1) not in {"None", "Unknown", "(null)"}


def _my_job_id() -> str:
    """This task's Slurm id: `<array job>_<task>` for an array task, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID", "")


class GpuWatch:
    """The task's GPU sampler and what its idle rule did: an event in the run's log; with
    `action: cancel`, the command is stopped and the task cancelled (CANCELLED in Slurm, which
    the monitor never retries)."""

    def __init__(self, p: Prepared) -> None:
        self.p = p
        self.sampler: gpu.Sampler | None = None
        self.cancelled: str | None = None
        self._child: Child | None = None

    def start(self, child: Child | None = None) -> GpuWatch:
        stage = self.p.stage
        if not stage.resources.gpus or not stage.gpu.enabled:
            return self
        from slurmflow.gpu import sampler as gpu
        from slurmflow.gpu import usage

        self._child = child
        path = usage.samples_path(Path(self.p.env["SLURMFLOW_WORKDIR"]), stage.name)
        meta = {k: self.p.status[k] for k in ("stage", "node", "job_id", "array_task", "restart", "host")}
        self.sampler = gpu.Sampler(
            path, stage.gpu, env=self.p.env, meta=meta, idle=stage.gpu_idle, on_idle=self._idle
        ).start()
        return self

    def _idle(self, why: str) -> None:
        from slurmflow.gpu import sampler as gpu

        rule = self.p.stage.gpu_idle
        assert rule is not None
        me = _my_job_id() or self.p.node
        self.p.store.append(GpuIdle(task=me, node=self.p.node, action=rule.action, why=why, t=self.p.clock()))
        if rule.action != "cancel":
            gpu.note(f"GPU idle: {why} (warning only)")
            return
        gpu.note(f"GPU idle: {why}: stopping the command and cancelling the task")
        self.cancelled = why
        child = self._child
        if child is None:  # a callable runs in this very process: cancelling the task stops it
            self.cancel_self()
        elif child.proc.poll() is None:
            child.terminate()
            timer = threading.Timer(30, _kill_if_running, (child,))
            timer.daemon = True
            timer.start()

    def stop(self) -> None:
        if self.sampler is None:
            return
        from slurmflow.gpu import sampler as gpu
        from slurmflow.gpu import usage

        self.sampler.stop()
        self.p.status["gpu_samples"] = self.sampler.samples
        try:  # `slurmflow gpu` reads this instead of the samples; never worth failing the task for
            usage.write_cache(self.sampler.path, self.p.stage.resources.gpus, self.p.status_path)
        except Exception as exc:
            gpu.note(f"GPU summary not written: {type(exc).__name__}: {exc}")
        if self.sampler.stopped:
            self.p.status["gpu_sampler"] = f"stopped: {self.sampler.stopped}"
            gpu.note(f"GPU sampler stopped: {self.sampler.stopped}")

    def cancel_self(self) -> int:
        """After an idle cancel: record it, then cancel this task in Slurm."""
        self.p.status.update(state="cancelled", reason=f"GPU idle: {self.cancelled}", ended=self.p.clock())
        _write_status(self.p.status_path, self.p.status)
        me = _my_job_id()
        if me:
            SubprocessRunner(timeout=60).run(["scancel", me])
        return 1


def _kill_if_running(child: Child) -> None:
    if child.proc.poll() is None:
        child.kill()


def _pick_up_metrics(p: Prepared) -> None:
    """A metrics file the command wrote itself (the stage's metrics_file, or metrics.json), as
    the stage's final metrics (rundir/metrics.py)."""
    where = Path(p.env.get("SLURMFLOW_TRIAL_DIR") or p.env["SLURMFLOW_WORKDIR"])
    started = p.status.get("started")
    since = float(started) if isinstance(started, (int, float)) else 0.0
    metrics.pick_up(where, p.stage.name, where / (p.stage.metrics_file or "metrics.json"), since, p.env)


def _finish(p: Prepared, code: int, result: object = None) -> None:
    _pick_up_metrics(p)
    p.status.update(state="completed" if code == 0 else "failed", exit_code=code, ended=p.clock())
    if result is not None:
        p.status["result"] = repr(result)[:2000]
    _write_status(p.status_path, p.status)


def call_stage(run_dir: str, key: str, array_index: int | None) -> object:
    """Run a callable stage in this process: the entry point submitit pickles, and what the
    wrapper uses on backends without submitit. The function gets the trial's config."""
    p = prepare(RunStore(Path(run_dir)), key, array_index)
    assert p.stage.callable is not None
    module_name, _, func_name = p.stage.callable.partition(":")
    os.environ.update(p.env)
    os.chdir(p.cwd)
    if p.cwd not in sys.path:
        sys.path.insert(0, p.cwd)
    watch = GpuWatch(p).start()
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(p.cfg)
    except BaseException:
        watch.stop()
        _finish(p, 1)
        raise
    watch.stop()
    _finish(p, 0, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m slurmflow.job RUN_DIR NODE_KEY", file=sys.stderr)
        return 2
    task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
    array_index = int(task_id) if task_id is not None else None
    store = RunStore(Path(args[0]))
    plan = store.plan()  # parsed once per task
    if plan.stages[plan.node(args[1]).stage].callable:
        try:
            call_stage(args[0], args[1], array_index)
        except Exception as exc:
            print(f"slurmflow task: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0
    p = prepare(store, args[1], array_index, plan)
    try:
        code, requeued = _run_command(p, _stage_argv(p))
    except SlurmflowError as exc:
        print(f"slurmflow task: {exc}", file=sys.stderr)
        code, requeued = 2, False
    if requeued:
        p.status.update(state="requeued", exit_code=code, ended=p.clock())
        _write_status(p.status_path, p.status)
        return 0
    if p.status.get("state") == "cancelled":  # by its GPU idle rule: already recorded
        return code
    _finish(p, code)
    return code


def _stage_argv(p: Prepared) -> list[str]:
    stage = p.stage
    field = "argv" if stage.argv is not None else "overrides" if stage.app is not None else "command"
    try:
        with job_environ(p.env):
            if stage.app is not None:
                # The app's own output directory (`.hydra/` and all it writes): <trial dir>/<stage>.
                output = str(Path(p.env["SLURMFLOW_WORKDIR"]) / stage.name)
                launch_dir = p.launch_dir
                app = stage.app
                if app.endswith(".py") or "/" in app:  # from the launch directory, wherever the task runs
                    app = os.path.join(launch_dir, app)
                else:  # a module: importable from the launch directory, as at plan time
                    p.env["PYTHONPATH"] = os.pathsep.join(filter(None, [launch_dir, p.env.get("PYTHONPATH")]))
                return appargs.app_argv(app, stage.app_overrides, p.cfg, output, sys.executable)
            return trialcfg.stage_argv(stage.command, stage.argv, p.cfg)
    except UsageError as exc:
        raise UsageError(f"stages.{stage.name}.{field}: {exc}") from exc


def _run_command(p: Prepared, words: list[str]) -> tuple[int, bool]:
    """Run the stage command; on the checkpoint signal, forward it, allow `grace` seconds, then
    requeue this very task (same job id: its dependents stay intact) while restarts remain."""
    cp = p.stage.checkpoint
    cp_signal = getattr(signal, f"SIG{cp.signal}") if cp else None
    # SIGTERM (scancel, time limit) and SIGUSR1 (--signal warnings) reach the command too.
    forward = {signal.SIGTERM, signal.SIGUSR1, signal.SIGINT} | ({cp_signal} if cp_signal else set())

    def on_signal(child: Child, signum: int) -> None:
        if cp is not None and signum == cp_signal:
            print(f"slurmflow task: {signal.Signals(signum).name}: checkpointing, {cp.grace} s grace", file=sys.stderr)

            def stop_if_running() -> None:
                if child.proc.poll() is None:
                    child.terminate()

            timer = threading.Timer(cp.grace, stop_if_running)
            timer.daemon = True
            timer.start()

    shell = p.stage.command is not None
    child = run_child(words, cwd=p.cwd, env=p.env, forward=sorted(forward), on_signal=on_signal, shell=shell)
    watch = GpuWatch(p).start(child)
    try:
        code = child.wait()
    finally:
        watch.stop()
    if watch.cancelled:
        return watch.cancel_self(), False
    if cp is None or cp_signal not in child.received:
        return code, False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= cp.max_restarts:
        print(f"slurmflow task: {restarts} restarts used (max_restarts): not requeued", file=sys.stderr)
        return code, False
    me = _my_job_id()
    runner = SubprocessRunner(timeout=60)
    if _being_preempted(runner, me):
        # The signal began a preemption's grace (PreemptParameters=send_user_signal): Slurm requeues
        # the job itself (PreemptMode=REQUEUE) or ends it PREEMPTED for the monitor to retry.
        # Requeued from here, the job would be recorded PREEMPTED again however its next attempt
        # ended (24.11), and its dependents would never run.
        print(f"slurmflow task: {me} is being preempted: Slurm requeues or ends it, not requeued here", file=sys.stderr)
        return code, True
    runner.run(["scontrol", "requeue", me])
    print(f"slurmflow task: requeued {me} (restart {restarts + 1} of {cp.max_restarts})", file=sys.stderr)
    return code, True
