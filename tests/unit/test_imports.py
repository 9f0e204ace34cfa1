"""What a command imports is what it pays for at every start: the read-only commands (status, gpu,
logs, cancel) never compose an experiment, so they must not import Hydra or OmegaConf."""

from __future__ import annotations

import subprocess
import sys

READ_ONLY = (
    "slurmflow.cli.main",
    "slurmflow.cli.commands",
    "slurmflow.cli.views",
    "slurmflow.monitoring.observe",
    "slurmflow.monitoring.loop",
    "slurmflow.monitoring.retry",
    "slurmflow.run.schedulers",
    "slurmflow.monitoring.status",
    "slurmflow.gpu.usage",
    "slurmflow.run.cancel",
)


def _after_read_only(expression: str) -> str:
    """What `expression` (over sys.modules) prints once the read-only commands are imported."""
    probe = f"import importlib, sys\nfor m in {READ_ONLY!r}: importlib.import_module(m)\nprint({expression})\n"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def test_read_only_commands_import_neither_hydra_nor_omegaconf() -> None:
    out = _after_read_only("' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'}))")
    assert out == "", f"imported by the read-only commands: {out}"


def test_the_public_api_holds_the_whole_exception_tree_and_every_name_resolves() -> None:
    import inspect

    import slurmflow
    from slurmflow import errors

    raised = {n for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SlurmflowError)}
    assert raised - set(slurmflow.__all__) == set()
    for name in slurmflow.__all__:
        assert getattr(slurmflow, name) is not None, name
    assert slurmflow.UsageError is errors.UsageError


def test_no_command_imports_the_test_fake() -> None:
    assert _after_read_only("'slurmflow.backends.fake' in sys.modules") == "False"


def test_batch_scripts_of_an_earlier_slurmflow_still_start_the_job_wrapper() -> None:
    """Scripts written before the wrapper moved run `python -m slurmflow.task RUN NODE`."""
    for module in ("slurmflow.task", "slurmflow.job"):
        done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and "usage: python -m slurmflow.job RUN_DIR NODE_KEY" in done.stderr, module
