"""One job of a Hydra app launched through `hydra/launcher=slurmflow`, run by the task wrapper as
`python -m slurmflow.experiment.hydra_job` (the run and the trial come from its environment).

It does in the job what Hydra's own launchers do in the launching process: compose the job's
config (the sweep's config plus the job's overrides, from the run's snapshot of the app's config
directory), set `hydra.job.num` and `hydra.job.id`, and run the task function with Hydra's
`run_job`, which makes the job's output directory (`hydra.sweep.dir`/`hydra.sweep.subdir`) and
writes `.hydra/{config,hydra,overrides}.yaml` there, as any Hydra job does. The JobReturn is
pickled in the trial directory: what `hydra.launcher.wait=true` hands back to Hydra.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

from slurmflow.fsio import write_atomic

STATE_FILE = "hydra/launcher.pkl"  # run/hydra_launch.py writes these two
RETURN_FILE = "hydra_return.pkl"


def use_snapshot(loader: Any, snapshot: Path) -> None:
    """Point the app's primary config source (Hydra's `main` search-path entry) at the run's
    snapshot of it: the job composes what was there at launch, whatever changed since."""
    from hydra._internal.config_repository import ConfigRepository

    for element in loader.config_search_path.get_path():
        # A file source: `file:///abs` or a plain path (what @hydra.main(config_path=...) records).
        if (
            element.provider == "main"
            and element.path
            and ("://" not in element.path or element.path.startswith("file://"))
        ):
            element.path = f"file://{snapshot}"
    loader.repository = ConfigRepository(config_search_path=loader.config_search_path)


def job_id() -> str:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURMFLOW_TRIAL_ID", "")


def run(run_dir: Path, index: int, overrides: list[str], trial_dir: Path) -> int:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals
    from omegaconf import open_dict

    info = json.loads((run_dir / "launch.json").read_text())["hydra_app"]
    if info.get("app_dir") and info["app_dir"] not in sys.path:
        sys.path.insert(0, info["app_dir"])  # the app's module and those beside it, as when it runs
    state = pickle.loads((run_dir / STATE_FILE).read_bytes())  # noqa: S301 (the run's own file, mode 0600)
    hydra_context, task_function, config = state["hydra_context"], state["task_function"], state["config"]
    setup_globals()
    Singleton.set_state(state["singletons"])  # the config sources registered, the job's name
    if info.get("snapshot"):
        use_snapshot(hydra_context.config_loader, run_dir / "config")
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config.hydra.job):
        sweep_config.hydra.job.id = job_id()
        sweep_config.hydra.job.num = int(info["first_num"]) + index
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    out = trial_dir / RETURN_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = cloudpickle.dumps(ret)
    except Exception as exc:  # a value (or exception) that cannot be pickled: its repr goes back instead
        said = f"{ret._return_value!r} (not picklable: {type(exc).__name__}: {exc})"[:2000]
        ret.return_value = said if ret.status == JobStatus.COMPLETED else RuntimeError(said)
        data = cloudpickle.dumps(ret)
    write_atomic(out, data)
    if ret.status != JobStatus.COMPLETED:
        error = ret._return_value
        if isinstance(error, BaseException):
            traceback.print_exception(type(error), error, error.__traceback__)
        return 1
    return 0


def main() -> int:
    env = os.environ
    needed = ("SLURMFLOW_RUN_DIR", "SLURMFLOW_TRIAL_INDEX", "SLURMFLOW_TRIAL_OVERRIDES", "SLURMFLOW_TRIAL_DIR")
    missing = [k for k in needed if k not in env]
    if missing:
        print(f"slurmflow hydra job: run by slurmflow's task wrapper only (no {missing[0]})", file=sys.stderr)
        return 2
    overrides = json.loads(env["SLURMFLOW_TRIAL_OVERRIDES"])
    return run(
        Path(env["SLURMFLOW_RUN_DIR"]), int(env["SLURMFLOW_TRIAL_INDEX"]), overrides, Path(env["SLURMFLOW_TRIAL_DIR"])
    )


if __name__ == "__main__":
    sys.exit(main())
