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


def test_read_only_commands_import_neither_hydra_nor_omegaconf() -> None:
    probe = (
        "import importlib, sys\n"
        f"for m in {READ_ONLY!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"imported by the read-only commands: {out.strip()}"


def test_the_public_api_holds_the_whole_exception_tree_and_every_name_resolves() -> None:
    import inspect

    import slurmflow
    from slurmflow import errors

    raised = {n for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SlurmflowError)}
    assert raised - set(slurmflow.__all__) == set()
    for name in slurmflow.__all__:
        assert getattr(slurmflow, name) is not None, name
    assert slurmflow.UsageError is errors.UsageError
