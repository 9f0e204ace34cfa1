"""`python my_app.py -m hydra/launcher=slurmflow lr=0.1,0.01 seed='range(3)'`

Hydra's sweeper hands this launcher each batch of jobs (their overrides). The launcher pickles the
app's Hydra state once, writes a slurmflow run (one stage: the app, one array task per job, in
chunked arrays), submits it, logs the run id and returns: Hydra exits while Slurm runs the jobs,
and `slurmflow status/monitor/retry/cancel/logs/gpu RUN` work on it. No job's config is composed
here: each job composes its own at start (slurmflow/experiment/hydra_job.py).

With `hydra.launcher.wait=true` it waits for the jobs and returns their JobReturns (the app's
return values, or the exception a job raised), as hydra-submitit-launcher does.

Hydra imports this module whenever any Hydra app starts (executing it before it is in sys.modules:
no dataclasses here): slurmflow is imported only by launch().
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class SlurmflowLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items()}
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context
        from hydra_plugins.slurmflow_launcher import _launch

        _launch.check_choices(self.params)
        if self.params.get("validate") != "full":
            _launch.quick_validation(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.slurmflow_launcher import _launch

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        return _launch.launch(self, [list(j) for j in job_overrides], initial_job_idx)
