"""`hydra/launcher=slurmflow`: the launcher's parameters.

The first group keeps hydra-submitit-launcher's names and meanings (its `submitit_slurm`
launcher), so that switching is one word on the command line; the second is slurmflow's own.
Hydra imports this module whenever any Hydra app starts: it imports nothing of slurmflow.
The annotations are typing's (Optional, Dict, List): OmegaConf reads them on every Python slurmflow supports.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class SlurmflowLauncherConf:
    _target_: str = "hydra_plugins.slurmflow_launcher.slurmflow_launcher.SlurmflowLauncher"

    # hydra-submitit-launcher's parameters
    timeout_min: int = 60
    cpus_per_task: Optional[int] = None
    gpus_per_node: Optional[int] = None
    gpus_per_task: Optional[int] = None
    tasks_per_node: int = 1
    mem_gb: Optional[int] = None
    mem_per_cpu: Optional[str] = None
    nodes: int = 1
    name: str = "${hydra.job.name}"
    partition: Optional[str] = None
    qos: Optional[str] = None
    account: Optional[str] = None
    comment: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    gres: Optional[str] = None
    cpus_per_gpu: Optional[int] = None
    mem_per_gpu: Optional[str] = None
    srun_args: Optional[List[str]] = None
    array_parallelism: int = 256
    signal_delay_s: int = 120
    max_num_timeout: int = 0
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    setup: Optional[List[str]] = None
    # Accepted so that a submitit config keeps working; slurmflow keeps logs in its run directory.
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    stderr_to_stdout: bool = False

    # slurmflow's own
    wait: bool = False  # wait for every job and return Hydra JobReturns (the submitit launcher's way)
    backend: str = "auto"  # slurm, local, or auto: Slurm where sbatch is reachable
    via: Optional[str] = None  # a prefix for every Slurm command: "ssh login1"
    runs_dir: str = "${oc.env:SLURMFLOW_RUNS_DIR,runs}"
    hold: bool = False  # submit held (scontrol release to start)
    max_array_size: Optional[int] = None
    local_gpus: Optional[int] = None
    poll_s: float = 10.0  # with wait=true: how often Slurm is asked
    # How the sweeper's check of a batch composes: "groups", once per distinct choice of config
    # groups (the other jobs' keys checked against it); "full", every job (Hydra's own way).
    validate: str = "groups"


ConfigStore.instance().store(group="hydra/launcher", name="slurmflow", node=SlurmflowLauncherConf, provider="slurmflow")
