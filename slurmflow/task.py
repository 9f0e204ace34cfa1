"""The in-job wrapper: `python -m slurmflow.task RUN_DIR NODE_KEY`, the body of every script.

It finds its trial from the manifest and its array index (plus the chunk's offset), composes the
trial's config from the run's snapshot of the config directory, resolves the stage command into an
argv list, runs it without a shell, and records the outcome in the trial directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from slurmflow import config
from slurmflow.errors import SlurmflowError
from slurmflow.runner import run_child
from slurmflow.store import RunStore


def _write_status(path: Path, doc: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m slurmflow.task RUN_DIR NODE_KEY", file=sys.stderr)
        return 2
    store = RunStore(Path(args[0]))
    plan = store.plan()
    node = plan.node(args[1])
    stage = plan.stages[node.stage]
    launch = store.read_json("launch.json")
    overrides = list(launch["base_overrides"])
    env = dict(os.environ)
    if node.array:
        index = node.offset + int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
        trial = store.read_trial(index)
        overrides += trial.overrides
        workdir = store.path("trials", trial.id)
        env.update(SLURMFLOW_TRIAL_ID=trial.id, SLURMFLOW_TRIAL_INDEX=str(index), SLURMFLOW_TRIAL_DIR=str(workdir))
    else:
        workdir = store.path("stages", stage.name)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = config.trial_config(store.path("config"), launch["config_name"], overrides)
    cfg_path = workdir / (f"{stage.name}.config.yaml" if not node.array else "config.yaml")
    cfg_path.write_text(OmegaConf.to_yaml(cfg))
    # `python` in a stage command is the interpreter slurmflow runs under (its venv on the cluster).
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    env.update(
        SLURMFLOW_RUN_DIR=str(store.root),
        SLURMFLOW_RUN_ID=store.run_id,
        SLURMFLOW_STAGE=stage.name,
        SLURMFLOW_CONFIG=str(cfg_path),
        SLURMFLOW_WORKDIR=str(workdir),
    )
    status_path = workdir / f"{stage.name}.status.json"
    status: dict[str, object] = {
        "stage": stage.name,
        "node": node.key,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        "host": socket.gethostname(),
        "started": time.time(),
        "state": "running",
    }
    _write_status(status_path, status)
    try:
        if stage.command is None:
            raise SlurmflowError(f"stage {stage.name} has no command")
        words = config.command_argv(stage.command, cfg)
        # SIGTERM (scancel, time limit) and SIGUSR1 (--signal warnings) reach the command too.
        code = run_child(words, cwd=launch["cwd"], env=env, forward=(signal.SIGTERM, signal.SIGUSR1, signal.SIGINT))
    except SlurmflowError as exc:
        print(f"slurmflow task: {exc}", file=sys.stderr)
        code = 2
    status.update(state="completed" if code == 0 else "failed", exit_code=code, ended=time.time())
    _write_status(status_path, status)
    return code


if __name__ == "__main__":
    sys.exit(main())
