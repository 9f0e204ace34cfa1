"""The launcher's work, imported only when a sweep is launched (Hydra's plugin scan skips
modules whose name starts with `_`): the launcher's parameters as a slurmflow stage, the app's
Hydra state pickled, the run written and submitted, and with `wait=true` the jobs' JobReturns."""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from slurmflow.errors import SlurmflowError, UsageError
from slurmflow.experiment.stages import parse_stage
from slurmflow.model import Stage
from slurmflow.run import hydra_launch, schedulers
from slurmflow.rundir.store import RunStore

if TYPE_CHECKING:
    from hydra_plugins.slurmflow_launcher.slurmflow_launcher import SlurmflowLauncher

log = logging.getLogger("hydra_plugins.slurmflow_launcher")


@dataclass(frozen=True)
class Submitted:
    """What a job returns to Hydra without `wait=true`: where it is, not what it computed."""

    run_id: str
    run_dir: str
    job_num: int
    job_id: str  # `<array job>_<task>`

    def __str__(self) -> str:
        return f"job {self.job_num} submitted as {self.job_id} (slurmflow status {self.run_dir})"


def _whole(p: dict[str, Any], key: str, default: int = 0) -> int:
    value = p.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"hydra.launcher.{key}: {value!r} is not a whole number")
    return value


def stage(name: str, p: dict[str, Any], python: str = "python") -> Stage:
    """The launcher's parameters (hydra-submitit-launcher's names) as the app's stage: one
    array task per Hydra job. A refusal is a one-line UsageError naming the parameter."""
    where = "hydra.launcher"
    for key in ("nodes", "tasks_per_node"):
        if _whole(p, key, 1) not in (0, 1):
            raise UsageError(
                f"{where}.{key}={p[key]}: slurmflow runs a Hydra job as one task on one node; for a multi-task job "
                "run the app from an experiment stage with `command: srun python app.py ...`"
            )
    if p.get("srun_args"):
        raise UsageError(f"{where}.srun_args: a Hydra job runs as one task, without srun; remove srun_args")
    if p.get("comment"):
        raise UsageError(f"{where}.comment: slurmflow keeps a job's comment for its own records; remove comment")
    gpus = _whole(p, "gpus_per_node") or _whole(p, "gpus_per_task")
    extra: list[str] = []
    gres = p.get("gres")
    if gres:
        kind, _, count = str(gres).partition(":")
        if kind != "gpu" or not count.isdigit():
            raise UsageError(
                f"{where}.gres={gres}: only gpu:N is understood (a typed GPU: gpus_per_node=N with "
                "constraint=<the nodes' feature>)"
            )
        if gpus and gpus != int(count):
            raise UsageError(f"{where}.gres={gres} and gpus_per_node={gpus} disagree: give one of them")
        gpus = int(count)
    for key, option in (
        ("exclude", "--exclude"),
        ("mem_per_cpu", "--mem-per-cpu"),
        ("mem_per_gpu", "--mem-per-gpu"),
        ("cpus_per_gpu", "--cpus-per-gpu"),
    ):
        if p.get(key):
            extra.append(f"{option}={p[key]}")
    for key, value in (p.get("additional_parameters") or {}).items():
        option = "--" + str(key).replace("_", "-")
        if value is True:
            extra.append(option)
        elif value not in (False, None):
            extra.append(f"{option}={value}")
    resources: dict[str, Any] = {
        "gpus": gpus,
        "time": _whole(p, "timeout_min", 60),
        "extra": extra,
    }
    for key in ("partition", "qos", "account", "constraint"):  # the same names as a stage's resources
        if p.get(key):
            resources[key] = str(p[key])
    if _whole(p, "cpus_per_task"):
        resources["cpus"] = _whole(p, "cpus_per_task")
    if _whole(p, "mem_gb"):
        resources["mem"] = f"{_whole(p, 'mem_gb')}G"
    body: dict[str, Any] = {"resources": resources, "per_trial": True}
    if _whole(p, "array_parallelism"):
        body["max_parallel"] = _whole(p, "array_parallelism")
    if _whole(p, "max_num_timeout") > 0:
        # As with submitit: the time-limit warning comes signal_delay_s before the limit, and the
        # job is requeued (same job id) up to max_num_timeout times.
        body["checkpoint"] = {
            "signal": "USR2",
            "seconds": _whole(p, "signal_delay_s", 120),
            "grace": 0,
            "max_restarts": _whole(p, "max_num_timeout"),
        }
    job = f"{python} -m {hydra_launch.JOB_MODULE}"
    setup = p.get("setup") or []
    if setup:
        # The setup lines are shell, run before the job; a ${...} in them is the shell's.
        lines = [str(line).replace("${", "\\${") for line in setup]
        body["command"] = "\n".join([*lines, f"exec {job}"])
    else:
        body["argv"] = job.split()
    try:
        return parse_stage(name, body)
    except UsageError as exc:
        raise UsageError(in_launcher_terms(str(exc), name)) from None


# What a slurmflow message calls a stage's field, and the launcher's parameter that sets it.
_TERMS = (
    ("resources.extra", "additional_parameters"),
    ("resources.time", "timeout_min"),
    ("resources.gpus", "gpus_per_node"),
    ("resources.cpus", "cpus_per_task"),
    ("resources.mem", "mem_gb"),
    ("resources.", ""),
    ("checkpoint.seconds", "signal_delay_s"),
    ("checkpoint.max_restarts", "max_num_timeout"),
    ("max_parallel", "array_parallelism"),
)


def in_launcher_terms(message: str, stage: str) -> str:
    """A slurmflow message about the app's stage, naming the launcher's parameters instead."""
    for field, param in _TERMS:
        message = message.replace(f"stages.{stage}.{field}", f"hydra.launcher.{param}".rstrip("."))
    return message.replace(f"stages.{stage}", "hydra.launcher").replace("--local-gpus", "hydra.launcher.local_gpus")


def quick_validation(loader: Any) -> None:
    """Hydra's sweepers check a batch before launching it by composing every job's config in
    this process (Sweeper.validate_batch_is_legal: ~40 ms a job, 40 s for 1,000). With this
    launcher each job composes its own config at start, so the check is made cheap: one full
    composition per distinct choice of config groups, and for every other job its keys are
    checked against that composition (an unknown key is still refused here, before anything is
    submitted). `hydra.launcher.validate=full` keeps Hydra's own check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException

    if "load_sweep_config" in vars(loader):
        return
    original = loader.load_sweep_config
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], Any] = {}

    def load_sweep_config(master_config: Any, sweep_overrides: list[str]) -> Any:
        overrides = list(sweep_overrides)
        parsed = parser.parse_overrides(overrides)
        groups = tuple(
            o.input_line or ""
            for o in parsed
            if o.is_delete() or loader.repository.group_exists(o.key_or_group.replace(".", "/"))
        )
        cfg = composed.get(groups)
        if cfg is None:
            cfg = composed[groups] = original(master_config, overrides)
            return cfg
        for o in parsed:
            if o.input_line in groups or o.is_add() or o.is_force_add():
                continue
            if OmegaConf.select(cfg, o.key_or_group, default=_ABSENT) is _ABSENT:
                raise ConfigCompositionException(
                    f"Could not override '{o.key_or_group}'. To append to your config use +{o.input_line}"
                )
        return cfg

    loader.load_sweep_config = load_sweep_config


_ABSENT = object()


def _app_dir(launcher: SlurmflowLauncher) -> str | None:
    """The directory of the task function's module (the app's script): the job imports the app
    and the modules beside it from there, as the app does when it runs."""
    module = sys.modules.get(getattr(launcher.task_function, "__module__", "__main__"))
    app_file = getattr(module, "__file__", None)
    return str(Path(app_file).resolve().parent) if app_file else None


def _app_state(launcher: SlurmflowLauncher) -> bytes:
    from hydra.core.singleton import Singleton

    assert launcher.hydra_context is not None
    loader = launcher.hydra_context.config_loader
    patched = vars(loader).pop("load_sweep_config", None)  # jobs compose with Hydra's own

    state = {
        "singletons": Singleton.get_state(),  # JobRuntime (the job's name), the config store
        "hydra_context": launcher.hydra_context,
        "task_function": launcher.task_function,
        "config": launcher.config,
    }
    try:
        data: bytes = cloudpickle.dumps(state)
    except Exception as exc:
        raise UsageError(
            f"the app's task function or its config cannot be pickled for the jobs ({type(exc).__name__}: {exc}): "
            "keep unpicklable objects (locks, open files, clients) out of module globals the task function uses"
        ) from None
    finally:
        if patched is not None:
            loader.load_sweep_config = patched  # type: ignore[method-assign]
    return data


def _primary_config_dir(launcher: SlurmflowLauncher) -> Path | None:
    assert launcher.hydra_context is not None
    for element in launcher.hydra_context.config_loader.get_search_path().get_path():
        if element.provider == "main" and element.path:
            if "://" in element.path and not element.path.startswith("file://"):
                return None  # pkg://: an installed package's configs, the same on every node
            path = Path(element.path.removeprefix("file://"))
            return path if path.is_dir() else None
    return None


class LaunchError(CompactHydraException):
    """Printed by Hydra as its one line, without a traceback."""


BACKENDS = ("auto", "slurm", "local")
VALIDATE = ("groups", "full")


def check_choices(p: dict[str, Any]) -> None:
    for key, choices, default in (("backend", BACKENDS, "auto"), ("validate", VALIDATE, "groups")):
        value = p.get(key) or default
        if value not in choices:
            raise LaunchError(f"slurmflow: hydra.launcher.{key}={value}: choose one of {', '.join(choices)}")


def launch(launcher: SlurmflowLauncher, jobs: list[list[str]], first_num: int) -> Sequence[JobReturn]:
    config, p = launcher.config, launcher.params
    assert config is not None
    check_choices(p)
    name = hydra_launch.stage_name(str(config.hydra.job.name))
    try:
        return _launch(launcher, config, p, jobs, first_num)
    except SlurmflowError as exc:
        # One line naming what is wrong; nothing was submitted where the error came before
        # submission (the run directory, when one was written, says what was).
        raise LaunchError(f"slurmflow: {in_launcher_terms(str(exc), name)}") from None
    except OSError as exc:  # a runs_dir that cannot be made, a config file gone
        raise LaunchError(f"slurmflow: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def _launch(
    launcher: SlurmflowLauncher, config: Any, p: dict[str, Any], jobs: list[list[str]], first_num: int
) -> Sequence[JobReturn]:
    name = hydra_launch.stage_name(str(config.hydra.job.name))
    sweep_dir = str(config.hydra.sweep.dir)  # resolved here, once: `${now:}` is the launch's time
    task = OmegaConf.to_container(config, resolve=False)
    assert isinstance(task, dict)
    task.pop("hydra", None)
    app = hydra_launch.AppLaunch(
        name=name,
        jobs=jobs,
        first_num=first_num,
        stage=stage(name, p),
        state=_app_state(launcher),
        app_dir=_app_dir(launcher),
        config_dir=_primary_config_dir(launcher),
        config_yaml=OmegaConf.to_yaml(OmegaConf.create(task)),
        sweep_dir=str(Path(sweep_dir).resolve()),
    )
    chosen = schedulers.for_launch(str(p.get("backend") or "auto"), p.get("via"), p.get("local_gpus"))
    if chosen.note:
        log.info(f"slurmflow: {chosen.note}")
    store, plan, ids = hydra_launch.launch(
        app,
        chosen,
        Path(str(p.get("runs_dir") or "runs")),
        via=p.get("via"),
        cwd=Path.cwd(),
        argv=sys.argv,
        hold=bool(p.get("hold")),
        max_array_size=p.get("max_array_size"),
    )
    arrays = ", ".join(ids[n.key] for n in plan.nodes if n.key in ids)
    log.info(f"slurmflow: run {store.run_id}: {len(jobs)} jobs submitted ({arrays}); outputs in {sweep_dir}")
    log.info(f"slurmflow: follow it with `slurmflow status {store.root}`")
    tasks = [(node, i) for node in plan.nodes for i in range(node.size)]
    if not p.get("wait"):
        out = []
        for (node, i), overrides in zip(tasks, jobs, strict=True):
            ret = JobReturn(overrides=overrides, task_name=str(config.hydra.job.name), status=JobStatus.COMPLETED)
            ret.return_value = Submitted(
                store.run_id, str(store.root), first_num + node.offset + i, f"{ids[node.key]}_{i}"
            )
            out.append(ret)
        return out
    return wait(store, chosen, p, jobs, name)


def wait(
    store: RunStore, chosen: schedulers.Chosen, p: dict[str, Any], jobs: list[list[str]], name: str
) -> list[JobReturn]:
    """Until every job has ended in Slurm: then each job's JobReturn, or a FAILED one saying how
    it ended where the job left none (killed, out of time, out of memory)."""
    from slurmflow.monitoring import observe

    backend = schedulers.of_run(store)
    last = None
    for st in observe.watch(store, backend, float(p.get("poll_s") or 10.0)):
        last = st
        done = sum(1 for t in st.tasks if t.state.final)
        log.info(f"slurmflow: {done}/{len(st.tasks)} jobs ended")
    assert last is not None
    ended = {t.trial: t for t in last.tasks if t.trial is not None}
    out: list[JobReturn] = []
    for trial in store.trials():
        path = store.trial_dir(trial) / hydra_launch.RETURN_FILE
        if path.exists():
            try:
                out.append(pickle.loads(path.read_bytes()))  # noqa: S301 (written by the run's own jobs)
            except Exception as exc:  # e.g. an exception class that cannot be rebuilt here
                ret = JobReturn(overrides=list(trial.overrides), task_name=name, status=JobStatus.FAILED)
                ret.return_value = RuntimeError(f"job {trial.index}: its result could not be read back: {exc!r}")
                out.append(ret)
            continue
        row = ended.get(trial.index)
        how = f"{row.state.name} in Slurm (job {row.job_id}, exit {row.exit})" if row else "without a trace in Slurm"
        ret = JobReturn(overrides=list(trial.overrides), task_name=name, status=JobStatus.FAILED)
        ret.return_value = RuntimeError(
            f"job {trial.index} ended {how} before returning: slurmflow logs {store.root} {name} {trial.index}"
        )
        out.append(ret)
    return out
