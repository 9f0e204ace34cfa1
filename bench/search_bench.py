"""A `search:` experiment against Hydra's Optuna sweeper, on the mini cluster. Both drivers get the
same objective (the noisy Branin job, jobs/noisy2d.py: same steps, same sleep, one GPU per trial),
the same search space, sampler, number of trials and trials in flight, and the same seeds. For
each driver it measures how long, and how many GPU-hours, it took until the best value told to the
study was within --target of the optimum, and until every trial was told.

  slurmflow: `slurmflow launch experiment=search_demo` submits the first batch and exits; then
    `slurmflow monitor RUN` (in the foreground here, or --as-job) advances the study. It tells
    the study what ended and submits a new trial as soon as one ends. `batch` trials stay in flight.
  hydra: `python bench/search_hydra_app.py -m hydra/sweeper=optuna hydra/launcher=submitit_slurm`.
    The sweeper asks for `n_jobs` trials and submits them as one array. It waits for the whole
    batch, tells the study, and only then asks for the next batch.

Run it inside the cluster, as bob, from a directory bob can write. The cluster is offline, so
fetch the peer's two wheels on the host first. As a Makefile target (recipe lines start with a tab):

  SEARCH_BENCH := $(CURDIR)/.mini/bench-search
  bench-search: install cluster-up
      @mkdir -p $(SEARCH_BENCH) && chmod 1777 $(SEARCH_BENCH)
      $(BIN)/pip download -q hydra-optuna-sweeper hydra-submitit-launcher --no-deps -d $(SEARCH_BENCH)/wheels
      $(CLUSTER) exec -u bob bash -c 'cd $(SEARCH_BENCH) && \\
        /opt/slurmflow/venv/bin/python /src/bench/search_bench.py --peer-wheels wheels'

When --peer-dir (default ./peer-search) is missing, both wheels are installed there with
`pip install --no-deps --target`. Only the peer's processes and jobs get it on PYTHONPATH.
hydra-optuna-sweeper declares optuna<3, but it runs on the cluster image's Optuna (>= 4): the
distributions it uses are deprecated there, not removed.

How it is measured, the same way for both drivers:
- t0 is just before the first process (`slurmflow launch`, or the Hydra app) starts.
- Each trial's "told" time is its Optuna `datetime_complete`, read from the study's storage:
  the moment the driver told the study, i.e. when the search could act on the value.
- target s: from t0 until the first told trial whose value is within --target of the
  optimum. total s: from t0 until the last of the n_trials trials was told.
- GPU-hours: sacct's allocations of bob's jobs submitted after t0 (-X: one row per array
  task), gres/gpu x elapsed. "target GPU-h" counts the GPU time allocated from t0 until the
  target was told, including trials still running then.
- The queue is emptied (scancel --me) before and after each run. Drivers alternate which
  goes first from seed to seed.
The peer needs a Python that `@hydra.main` runs on: not 3.14, the Python of the 26.05 image
(facebookresearch/hydra#3121). Run this on the 24.11 (default) or 22.05 cluster.
The sweeper has no pruner: with `experiment=search_pruned` only slurmflow prunes, and the GPU-hour
columns show what pruning saves.
"""

from __future__ import annotations

import argparse
import getpass
import inspect
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from hydra_launcher_bench import stop  # noqa: E402  (SIGTERM to the process group, then SIGKILL)

APP = REPO / "bench" / "search_hydra_app.py"
SLURMFLOW, HYDRA = "slurmflow", "hydra"
DRIVERS = (SLURMFLOW, HYDRA)
# The peer's distributions, as their wheels and dist-info directories name them.
PEER_DISTS = ("hydra_optuna_sweeper", "hydra_submitit_launcher")
# Samplers both drivers know by the same name (the sweeper has no QMC).
PEER_SAMPLERS = {"tpe": "tpe", "random": "random", "cmaes": "cmaes", "grid": "grid"}
# The app's config keys for the knobs; the experiment must use the same names.
KNOBS = ("steps", "step_sleep", "noise")


# --- the experiment, read once -----------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What both drivers are given. It is read from the experiment, and the command line may
    change some of it."""

    experiment: str
    params: Mapping[str, str]  # key -> Hydra's Optuna-sweeper grammar, e.g. interval(-5.0, 10.0)
    n_trials: int
    batch: int
    direction: Literal["minimize", "maximize"]
    sampler: str
    sampler_options: Mapping[str, Any]
    pruner: str | None
    knobs: Mapping[str, Any]  # steps, step_sleep, noise
    gpus: int
    cpus: int
    mem_gb: int | None
    time_min: int | None
    optimum: float
    target: float


def compose(experiment: str) -> Any:
    """The experiment's config composed as slurmflow composes it (Hydra, configs/config.yaml),
    defaults lists included (search_pruned builds on search_demo)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return hydra_compose(config_name="config", overrides=[f"experiment={experiment}"])


def minutes(text: str) -> int | None:
    """A stage's `time` as whole minutes (at least 1) for submitit's timeout_min: 30m, 2h, 1.5h,
    90s, 1d, or Slurm's M, M:S, H:M:S, D-H:M:S. None when there is no limit or it cannot be read."""
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    if m:
        total = float(m.group(1)) * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[m.group(2)]
    else:
        days, _, clock = text.rpartition("-")
        parts = clock.split(":")
        if not (days == "" or days.isdigit()) or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            return None
        values = [int(p) for p in parts]
        # Slurm reads one number as minutes, two as M:S, three as H:M:S; a day prefix as D-H[:M[:S]].
        if days:
            values = values + [0] * (3 - len(values))
            hours, mins, secs = values
        elif len(values) == 3:
            hours, mins, secs = values
        else:
            hours, mins, secs = 0, values[0], values[1] if len(values) == 2 else 0
        total = int(days or 0) * 1440 + hours * 60 + mins + secs / 60
    return max(1, round(total)) if total > 0 else None


def gigabytes(text: str) -> int | None:
    """A stage's `mem` as whole GB for submitit's mem_gb (4G, 1024M, 1T). None means not a whole
    number of GB: the peer then gets the cluster's default, and setup() refuses that."""
    m = re.fullmatch(r"(\d+)\s*([MGT]?)", text.strip().upper())
    if not m:
        return None
    mb = int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return mb // 1024 if mb % 1024 == 0 else None


def plain(node: Any, what: str, *, resolve: bool = True) -> dict[str, Any]:
    """A config node as a dict with str keys; {} for a missing one."""
    from omegaconf import OmegaConf

    if node is None:
        return {}
    got = OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(got, dict):
        raise SystemExit(f"{what}: expected a mapping, got {got!r}")
    return {str(k): v for k, v in got.items()}


def setup(args: argparse.Namespace) -> Setup:
    from jobs.noisy2d import BRANIN_MIN

    cfg = compose(args.experiment)
    search = plain(cfg.get("search"), "search")
    if not search:
        raise SystemExit(f"experiment={args.experiment}: no search: block")
    objective: Any = cfg.objective
    if not hasattr(objective, "keys"):  # a list of objectives
        if len(objective) != 1:
            raise SystemExit("the peer's study would be multi-objective: give an experiment with one objective")
        objective = objective[0]
    mode = plain(objective, "objective").get("mode", "min")
    sampler = search.get("sampler") or "tpe"
    options: dict[str, Any] = {}
    if isinstance(sampler, dict):
        options = {k: v for k, v in sampler.items() if k != "name"}
        sampler = sampler["name"]
    if sampler not in PEER_SAMPLERS:
        raise SystemExit(
            f"sampler {sampler!r}: Hydra's Optuna sweeper has none of that name ({', '.join(PEER_SAMPLERS)})"
        )
    pruner = search.get("pruner")
    stages = plain(cfg.stages, "stages", resolve=False)
    trial_stages = [name for name, st in stages.items() if isinstance(st, dict) and st.get("per_trial")]
    if len(trial_stages) != 1:
        raise SystemExit(f"the bench needs one per-trial stage (found {trial_stages}): the peer runs one job a trial")
    stage = trial_stages[0]
    res = plain(cfg.stages[stage].get("resources"), f"stages.{stage}.resources")
    mem_gb = gigabytes(str(res["mem"])) if "mem" in res else None
    if "mem" in res and mem_gb is None:
        raise SystemExit(f"stages.{stage}.resources.mem={res['mem']}: the peer takes whole GB only")
    knobs = {k: getattr(args, k) if getattr(args, k) is not None else cfg[k] for k in KNOBS}
    return Setup(
        experiment=args.experiment,
        params={str(k): str(v) for k, v in search["params"].items()},
        n_trials=args.n_trials or int(search["n_trials"]),
        batch=args.batch or int(search["batch"]),
        direction="maximize" if mode == "max" else "minimize",
        sampler=str(sampler),
        sampler_options=options,
        pruner=None if pruner is None else str(pruner["name"] if isinstance(pruner, dict) else pruner),
        knobs=knobs,
        gpus=int(res.get("gpus", 0)),
        cpus=int(res.get("cpus", 1)),
        mem_gb=mem_gb,
        time_min=minutes(str(res["time"])) if "time" in res else None,
        optimum=args.optimum if args.optimum is not None else BRANIN_MIN,
        target=args.target,
    )


def tpe_multivariate_default() -> bool:
    """What a TPESampler built with Optuna's defaults does for one objective. The sweeper always
    passes multivariate=False. Optuna >= 5 defaults to None, which means multivariate for a single
    objective. The peer is given the installed Optuna's default, so both drivers run the same TPE
    (assuming slurmflow's `tpe` leaves it at Optuna's default)."""
    import optuna

    default = inspect.signature(optuna.samplers.TPESampler).parameters["multivariate"].default
    return True if default is None else bool(default)


# --- Slurm ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """One array task (or job) of mine, as accounting recorded it."""

    job_id: str
    start: float | None
    end: float | None
    elapsed_s: int
    gpus: int


def stamp(text: str) -> float | None:
    """A sacct time (local, no zone) as epoch seconds; None for Unknown/None."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


FIELDS = "JobID,Submit,Start,End,ElapsedRaw,AllocTRES"


def allocations(since: float, until: float) -> list[Allocation]:
    """My jobs submitted in [since, until], one row per array task (-X: no steps)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 2))
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-u", getpass.getuser(), "-S", start, "-E", "now", "-o", FIELDS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job_id, submit, begin, end, elapsed, tres = parts[:6]
        submitted = stamp(submit)
        if submitted is None or not since - 1 <= submitted <= until + 1:  # sacct has 1 s resolution
            continue
        gpus = re.search(r"gres/gpu(?::[^=,]+)?=(\d+)", tres)
        rows.append(
            Allocation(
                job_id=job_id,
                start=stamp(begin),
                end=stamp(end),
                elapsed_s=int(elapsed) if elapsed.isdigit() else 0,
                gpus=int(gpus.group(1)) if gpus else 0,
            )
        )
    return rows


def settled_allocations(since: float, until: float, timeout: float = 60.0) -> list[Allocation]:
    """allocations() once accounting has an end for every job that started (slurmdbd may lag the
    controller by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = allocations(since, until)
        if all(r.end is not None for r in rows if r.start is not None) or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def gpu_hours(rows: Sequence[Allocation], upto: float | None = None) -> float:
    """GPU-hours allocated: elapsed x GPUs, or only the part before `upto` (epoch seconds)."""
    total = 0.0
    for r in rows:
        if upto is None:
            total += r.elapsed_s * r.gpus
        elif r.start is not None:
            end = r.end if r.end is not None else r.start + r.elapsed_s
            total += max(0.0, min(end, upto) - r.start) * r.gpus
    return total / 3600


def queue_empty() -> bool:
    out = subprocess.run(["squeue", "--me", "--noheader"], capture_output=True, text=True, check=False).stdout
    return not out.strip()


def clear_queue(timeout: float = 120.0) -> None:
    subprocess.run(["scancel", "--me"], check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_empty():
            return
        time.sleep(0.5)
    raise SystemExit(f"my jobs are still in the queue {timeout:.0f} s after scancel --me")


# --- one run of one driver -----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one driver did with one seed."""

    driver: str
    seed: int
    told: int = 0  # trials finished in the study (complete, pruned or failed)
    pruned: int = 0
    failed: int = 0
    best: float | None = None
    target_s: float | None = None
    target_gpu_h: float | None = None
    total_s: float | None = None  # None: fewer than n_trials were told
    total_gpu_h: float = 0.0
    tasks: int = 0  # array tasks Slurm ran or queued
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def environment(peer_dir: Path, *, peer: bool) -> dict[str, str]:
    """The driver's environment. sbatch exports it to the jobs (--export=ALL, Slurm's default), so
    submitit's jobs find the peer's plugins and jobs.noisy2d as the driver does."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != peer_dir]
    path = [str(peer_dir), str(REPO), *keep] if peer else keep
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    else:
        env.pop("PYTHONPATH", None)
    return env


def start(argv: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to stop it whole
        )


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def follow(
    read: Callable[[], list[optuna.trial.FrozenTrial] | None],
    n_trials: int,
    alive: Callable[[], bool],
    args: argparse.Namespace,
) -> tuple[list[optuna.trial.FrozenTrial], str | None]:
    """Poll the study until n_trials are finished. Returns the trials, and why it stopped short
    (the driver ended first, or --timeout), or None."""
    deadline = time.monotonic() + args.timeout
    trials: list[optuna.trial.FrozenTrial] = []
    gone_at: float | None = None
    while True:
        got = read()
        trials = got if got is not None else trials
        if sum(1 for t in trials if t.state.is_finished()) >= n_trials:
            return trials, None
        now = time.monotonic()
        if not alive():
            gone_at = gone_at or now
            if now - gone_at > 3 * args.poll + 2:  # a last read after it ended, to be sure
                return trials, "the driver ended first"
        if now > deadline:
            return trials, f"--timeout {args.timeout:g} s"
        time.sleep(args.poll)


def score(out: Outcome, trials: Sequence[optuna.trial.FrozenTrial], s: Setup, t0: float, n: int) -> None:
    """Fill in the study-side numbers: counts, best, time to target and to the last tell."""
    from optuna.trial import TrialState

    finished = sorted(
        (t for t in trials if t.state.is_finished() and t.datetime_complete is not None),
        key=lambda t: t.datetime_complete or datetime.min,
    )
    out.told = len(finished)
    out.pruned = sum(1 for t in finished if t.state == TrialState.PRUNED)
    out.failed = sum(1 for t in finished if t.state == TrialState.FAIL)
    sign = 1.0 if s.direction == "minimize" else -1.0
    for t in finished:
        if t.state != TrialState.COMPLETE or t.value is None:
            continue
        if out.best is None or sign * t.value < sign * out.best:
            out.best = t.value
        if out.target_s is None and sign * (t.value - s.optimum) <= s.target:
            assert t.datetime_complete is not None
            out.target_s = t.datetime_complete.timestamp() - t0
    if len(finished) >= n:
        last = finished[n - 1].datetime_complete
        assert last is not None
        out.total_s = last.timestamp() - t0


def account(out: Outcome, t0: float, until: float) -> None:
    rows = settled_allocations(t0, until)
    out.tasks = len(rows)
    out.total_gpu_h = gpu_hours(rows)
    if out.target_s is not None:
        out.target_gpu_h = gpu_hours(rows, upto=t0 + out.target_s)


def run_slurmflow(s: Setup, seed: int, work: Path, peer_dir: Path, args: argparse.Namespace) -> Outcome:
    from slurmflow.rundir.store import RunStore
    from slurmflow.search import study as sf_study

    out = Outcome(SLURMFLOW, seed)
    env = environment(peer_dir, peer=False)
    knobs = [f"{k}={v}" for k, v in s.knobs.items()]
    launch = [sys.executable, "-m", "slurmflow", "launch", "--json", "--runs-dir", str(work / "runs")]
    launch += [f"experiment={s.experiment}", f"search.n_trials={s.n_trials}", f"search.batch={s.batch}"]
    launch += [f"search.seed={seed}", f"noise_seed={seed}", *knobs]
    if args.force:  # past a GPU-hour quota check: the peer checks none
        launch.insert(4, "--force")
    t0 = time.time()
    try:
        done = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        out.error = "launch did not return within 300 s"
        clear_queue()
        return out
    if done.returncode != 0 or "{" not in done.stdout:
        out.error = f"launch exited {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
        clear_queue()
        return out
    # --json prints one object; anything before it (a warning) is not ours to parse.
    doc, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
    run_dir = Path(doc["run_dir"])
    monitor = [sys.executable, "-m", "slurmflow", "monitor", str(run_dir), "--interval", f"{args.monitor_interval:g}"]
    monitor += ["--max-interval", f"{args.monitor_max_interval or args.monitor_interval:g}"]
    if args.as_job:
        monitor.append("--as-job")
    log = work / "monitor.log"
    proc = start(monitor, REPO, env, log)
    store = RunStore(run_dir)
    opened: list[optuna.Study] = []  # opened once (storage and schema checks), then only read

    def read() -> list[optuna.trial.FrozenTrial] | None:
        try:
            if not opened:
                st = sf_study.open_study(store)  # whatever storage the experiment chose
                if st is None:
                    return None
                opened.append(st)
            return opened[0].get_trials(deepcopy=False)
        except Exception:  # a storage locked for a write: the next poll reads it
            return None

    def alive() -> bool:
        # --as-job: the command returns at once, and the chain of monitor jobs is in the queue.
        return proc.poll() is None if not args.as_job else not queue_empty()

    trials, short = follow(read, s.n_trials, alive, args)
    score(out, trials, s, t0, s.n_trials)
    if short:
        out.error = f"{out.told} of {s.n_trials} trials told: {short}\n{tail(log)}"
    elif not args.as_job:
        try:  # its next tick finds the run ended
            proc.wait(timeout=3 * (args.monitor_max_interval or args.monitor_interval) + 15)
        except subprocess.TimeoutExpired:
            out.notes.append("monitor still running after the last tell; stopped")
    stop(proc)
    if proc.returncode not in (0, None, -signal.SIGTERM) and out.error is None:
        out.error = f"monitor exited {proc.returncode}:\n{tail(log)}"
    until = time.time()
    clear_queue()
    account(out, t0, until)
    return out


def peer_command(s: Setup, seed: int, work: Path, storage: str, name: str) -> list[str]:
    sampler = PEER_SAMPLERS[s.sampler]
    argv = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={work}/multirun"]
    argv += ["hydra/sweeper=optuna", f"hydra/sweeper/sampler={sampler}", "hydra/launcher=submitit_slurm"]
    argv += [f"hydra.sweeper.n_trials={s.n_trials}", f"hydra.sweeper.n_jobs={s.batch}"]
    argv += [f"hydra.sweeper.direction={s.direction}", f"hydra.sweeper.storage='{storage}'"]
    argv += [f"hydra.sweeper.study_name={name}"]
    if sampler != "grid":
        argv.append(f"hydra.sweeper.sampler.seed={seed}")
    options = dict(s.sampler_options)
    if sampler == "tpe":
        options.setdefault("multivariate", tpe_multivariate_default())
    argv += [f"hydra.sweeper.sampler.{k}={json.dumps(v)}" for k, v in options.items()]
    # The same resources as the experiment's trial stage; the same partition (the cluster's default).
    argv.append(f"hydra.launcher.gpus_per_node={s.gpus}")
    argv.append(f"hydra.launcher.cpus_per_task={s.cpus}")
    if s.mem_gb is not None:
        argv.append(f"hydra.launcher.mem_gb={s.mem_gb}")
    if s.time_min is not None:
        argv.append(f"hydra.launcher.timeout_min={s.time_min}")
    # The search space: the sweeper reads sweeps given on the command line as its params.
    argv += [f"{k}={v}" for k, v in s.params.items()]
    argv += [f"{k}={v}" for k, v in s.knobs.items()]
    argv.append(f"noise_seed={seed}")
    return argv


def run_hydra(s: Setup, seed: int, work: Path, peer_dir: Path, args: argparse.Namespace) -> Outcome:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Outcome(HYDRA, seed)
    storage = f"sqlite:///{work / 'study.db'}"
    name = f"hydra-{seed}"
    log = work / "hydra.log"
    t0 = time.time()
    # Made here, inside the timed span, so this process can read it from the first poll. The
    # sweeper loads it (create_study with load_if_exists) instead of making it.
    st = optuna.create_study(storage=storage, study_name=name, direction=s.direction)
    proc = start(peer_command(s, seed, work, storage, name), work, environment(peer_dir, peer=True), log)

    def read() -> list[optuna.trial.FrozenTrial] | None:
        try:
            return st.get_trials(deepcopy=False)
        except Exception:  # the sweeper holds the write lock; the next poll reads it
            return None

    trials, short = follow(read, s.n_trials, lambda: proc.poll() is None, args)
    score(out, trials, s, t0, s.n_trials)
    if short:
        out.error = f"{out.told} of {s.n_trials} trials told: {short}\n{tail(log)}"
    else:
        try:  # it writes optimization_results.yaml and exits
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            out.notes.append("sweeper still running after the last tell; stopped")
    stop(proc)
    if proc.returncode not in (0, -signal.SIGTERM) and out.error is None:
        out.error = f"the Hydra app exited {proc.returncode}:\n{tail(log)}"
    until = time.time()
    clear_queue()
    account(out, t0, until)
    return out


RUNNERS: dict[str, Callable[[Setup, int, Path, Path, argparse.Namespace], Outcome]] = {
    SLURMFLOW: run_slurmflow,
    HYDRA: run_hydra,
}


def one_run(driver: str, s: Setup, seed: int, peer_dir: Path, args: argparse.Namespace) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix=f"search-{driver}-{seed}-", dir=".")).resolve()
    try:
        result = RUNNERS[driver](s, seed, work, peer_dir, args)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:  # this run only: the next one goes on
        result = Outcome(driver, seed, error=f"{type(exc).__name__}: {exc}")
        clear_queue()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.keep:
        result.notes.append(f"kept {work}")
    return result


# --- the peer ------------------------------------------------------------------------------------


def install_peer(peer_dir: Path, wheels: Path | None) -> dict[str, str]:
    """The peer's versions, by distribution. Both wheels are installed into peer_dir in one pip
    call when it is missing. One call, because both put files under hydra_plugins/, and a second
    `pip install --target` into the same directory would not replace a directory that exists."""
    if not peer_dir.exists():
        found = [sorted(wheels.glob(f"{d}-*.whl")) if wheels else [] for d in PEER_DISTS]
        missing = [d for d, f in zip(PEER_DISTS, found, strict=True) if not f]
        if missing:
            names = " ".join(d.replace("_", "-") for d in PEER_DISTS)
            raise SystemExit(
                f"{peer_dir} is missing and no wheel of {', '.join(missing)} was given (--peer-wheels DIR); "
                f"on the host: pip download {names} --no-deps -d DIR"
            )
        wheel_paths = [str(f[-1]) for f in found]
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(peer_dir), *wheel_paths]
        subprocess.run(pip, check=True)
    versions = {}
    for dist in PEER_DISTS:
        infos = sorted(peer_dir.glob(f"{dist}-*.dist-info"))
        if not infos:
            raise SystemExit(f"{peer_dir} holds no {dist}: remove it and give --peer-wheels")
        versions[dist] = infos[-1].name.removeprefix(f"{dist}-").removesuffix(".dist-info")
    return versions


# --- the table -----------------------------------------------------------------------------------


def cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def ratio(ours: float | None, peer: float | None) -> float | None:
    return ours / peer if ours is not None and peer else None


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def median_cell(values: Sequence[float | None], fmt: str, suffix: str = "") -> str:
    """The median of the values there are, and how many there are when some are missing (a target
    never reached): a median over the lucky seeds alone would flatter."""
    got = [v for v in values if v is not None]
    text = cell(median(got), fmt) + (suffix if got else "")
    return text if len(got) == len(values) else f"{text} {len(got)}/{len(values)}"


COLUMNS = (
    ("target s", "target_s", ".1f"),
    ("target GPU-h", "target_gpu_h", ".3f"),
    ("total s", "total_s", ".1f"),
    ("total GPU-h", "total_gpu_h", ".3f"),
)


def report(outcomes: Sequence[Outcome], s: Setup) -> None:
    head = f"{'seed':>4} {'driver':>10} {'told':>5} {'pruned':>6} {'tasks':>5} {'best':>9}"
    print(head + "".join(f" {name:>12}" for name, _, _ in COLUMNS))
    for o in outcomes:
        row = f"{o.seed:>4} {o.driver:>10} {o.told:>5} {o.pruned:>6} {o.tasks:>5} {cell(o.best, '.4f'):>9}"
        print(row + "".join(f" {cell(getattr(o, attr), fmt):>12}" for _, attr, fmt in COLUMNS))
    for driver in DRIVERS:
        mine = [o for o in outcomes if o.driver == driver]
        if mine:
            row = f"{'med':>4} {driver:>10} {'':>5} {'':>6} {'':>5} {cell(median([o.best for o in mine]), '.4f'):>9}"
            print(row + "".join(f" {median_cell([getattr(o, a) for o in mine], f):>12}" for _, a, f in COLUMNS))
    seeds = sorted({o.seed for o in outcomes})
    pairs = [
        (o, p)
        for seed in seeds
        for o in outcomes
        for p in outcomes
        if o.seed == p.seed == seed and o.driver == SLURMFLOW and p.driver == HYDRA
    ]
    if pairs:
        print(f"\nratios slurmflow / {HYDRA} (below 1: slurmflow needed less), per seed and their median:")
        print(f"{'seed':>4}" + "".join(f" {name:>12}" for name, _, _ in COLUMNS))
        per: dict[str, list[float | None]] = {attr: [] for _, attr, _ in COLUMNS}
        for o, p in pairs:
            values = [ratio(getattr(o, attr), getattr(p, attr)) for _, attr, _ in COLUMNS]
            for (_, attr, _), v in zip(COLUMNS, values, strict=True):
                per[attr].append(v)
            print(f"{o.seed:>4}" + "".join(f" {times(v):>12}" for v in values))
        print(f"{'med':>4}" + "".join(f" {median_cell(per[a], '.2f', 'x'):>12}" for _, a, _ in COLUMNS))
    print(f"\ntarget: the best value told is within {s.target:g} of the optimum {s.optimum:.6f} ('-': never; k/n:")
    print("  reached in k of n seeds, the median over those). s: from the first process's start until the driver")
    print("  told the study (Optuna's datetime_complete). GPU-h: sacct, gres/gpu x elapsed of the jobs submitted;")
    print("  target GPU-h: allocated until the target was told. told: trials finished in the study; tasks: Slurm")
    print("  array tasks (with --as-job, the monitor's links too).", flush=True)
    for o in outcomes:
        for note in o.notes:
            print(f"note [{o.driver}, seed {o.seed}]: {note}", flush=True)
        if o.error:
            print(f"error [{o.driver}, seed {o.seed}]: {o.error}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="search_demo", help="a search experiment of configs/experiment/")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler and noise seeds, one run each")
    ap.add_argument("--drivers", nargs="+", choices=DRIVERS, default=list(DRIVERS))
    ap.add_argument("--n-trials", type=int, default=None, help="default: the experiment's search.n_trials")
    ap.add_argument(
        "--batch", type=int, default=None, help="trials in flight (the peer's n_jobs); default: search.batch"
    )
    ap.add_argument("--steps", type=int, default=None, help="steps per trial (default: the experiment's)")
    ap.add_argument("--step-sleep", type=float, default=None, help="seconds per step (default: the experiment's)")
    ap.add_argument("--noise", type=float, default=None, help="noise standard deviation (default: the experiment's)")
    ap.add_argument(
        "--target", type=float, default=0.5, help="reached when the best value is this close to the optimum"
    )
    ap.add_argument("--optimum", type=float, default=None, help="default: Branin's global minimum, 0.397887")
    ap.add_argument("--monitor-interval", type=float, default=5.0, help="`slurmflow monitor --interval` (s)")
    ap.add_argument(
        "--monitor-max-interval", type=float, default=None, help="`--max-interval` (default: the interval: no back-off)"
    )
    ap.add_argument("--as-job", action="store_true", help="run slurmflow's monitor as a Slurm job (--as-job)")
    ap.add_argument("--force", action="store_true", help="`slurmflow launch --force`: past the account's GPU quota")
    ap.add_argument("--peer-wheels", type=Path, help="where the host's `pip download` put the peer's two wheels")
    ap.add_argument("--peer-dir", type=Path, default=Path("peer-search"), help="the peer's install target")
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between reads of the study")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (runs, logs, study)")
    args = ap.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # jobs.noisy2d, for the optimum
    s = setup(args)
    peer_dir = args.peer_dir.resolve()
    versions = install_peer(peer_dir, args.peer_wheels) if HYDRA in args.drivers else {}
    import optuna

    clear_queue()
    peer = ", ".join(f"{d.replace('_', '-')} {v}" for d, v in versions.items())
    print(f"slurmflow `{s.experiment}` vs Hydra ({peer}); Optuna {optuna.__version__}")
    print(
        f"{s.n_trials} trials, {s.batch} in flight, sampler {s.sampler}"
        + (f" {dict(s.sampler_options)}" if s.sampler_options else "")
        + f", pruner {s.pruner or 'none'} (the peer: none); "
        + ", ".join(f"{k}={v}" for k, v in s.knobs.items())
        + f"; {s.gpus} GPU, {s.cpus} CPU a trial; monitor "
        + ("--as-job" if args.as_job else "in the foreground")
        + f" every {args.monitor_interval:g} s"
    )
    outcomes = []
    for i, seed in enumerate(args.seeds):
        order = list(args.drivers) if i % 2 == 0 else list(reversed(args.drivers))
        for driver in order:
            print(f"[seed {seed}] {driver} ...", file=sys.stderr, flush=True)
            outcomes.append(one_run(driver, s, seed, peer_dir, args))
    outcomes.sort(key=lambda o: (o.seed, DRIVERS.index(o.driver)))
    report(outcomes, s)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
