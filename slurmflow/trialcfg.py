"""A trial's config in the job without Hydra, where the sweep changes only values.

Every task of a sweep needs its trial's config. Composing it with Hydra costs the task ~0.3 s of
CPU (Hydra's import and one compose), paid once per task: 10,000 tasks spend most of an hour on
it. When no swept key is a config group, the trial's config is the experiment composed at launch
(`experiment.yaml`: base overrides applied, swept keys at their defaults) with the trial's values
set, exactly as Hydra applies a `key=value` override (`OmegaConf.update(..., merge=True)`), and
planning already validates trials this way. So launch records each axis's values, parsed once by
Hydra's grammar (`launch.json` "values"), and the job sets them with OmegaConf alone. A sweep over
a config group keeps composing in the job.

This module imports no Hydra: it is what runs on compute nodes ten thousand times.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from slurmflow.errors import UsageError

# [(key, [value, ...]), ...] in sweep order; JSON values as Hydra's grammar parsed them.
AxisValues = Sequence[tuple[str, Sequence[Any]]]


def json_exact(value: Any) -> bool:
    """Whether a value survives a trip through launch.json unchanged (type included)."""
    try:
        return bool(json.loads(json.dumps(value)) == value) and _same_types(json.loads(json.dumps(value)), value)
    except (TypeError, ValueError):
        return False


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    return True


def trial_values(axes: AxisValues, index: int) -> list[tuple[str, Any]]:
    """The values of trial `index` in the cartesian product, the last axis varying fastest (the
    order `sweep.expand` numbers trials in, Hydra's --multirun order)."""
    out: list[tuple[str, Any]] = []
    rest = index
    for key, values in reversed(axes):
        rest, pos = divmod(rest, len(values))
        out.append((key, values[pos]))
    if rest:
        raise ValueError(f"trial {index} is outside a sweep of {_size(axes)} trials")
    return out[::-1]


def _size(axes: AxisValues) -> int:
    n = 1
    for _, values in axes:
        n *= len(values)
    return n


def build(experiment_yaml: Path, values: Sequence[tuple[str, Any]]) -> DictConfig:
    """experiment.yaml with the trial's values set as Hydra sets a `key=value` override."""
    cfg = OmegaConf.load(experiment_yaml)
    assert isinstance(cfg, DictConfig)
    for key, value in values:
        OmegaConf.update(cfg, key, value, merge=True)
    OmegaConf.set_struct(cfg, True)  # as Hydra's compose returns it: no new keys by accident
    return cfg


def command_argv(template: str, cfg: DictConfig) -> list[str]:
    """Split the command as the user wrote it, THEN resolve ${...} in each word: a value becomes
    exactly one argument whatever it contains, and no shell ever sees it."""
    words = shlex.split(template)
    if not any("${" in w for w in words):
        return words
    holder = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    assert isinstance(holder, DictConfig)
    holder["_slurmflow_words"] = words
    try:
        resolved = OmegaConf.to_container(holder["_slurmflow_words"], resolve=True)
    except OmegaConfBaseException as exc:
        text = str(exc).strip().splitlines()
        raise UsageError(f"cannot resolve {template!r}: {text[0] if text else type(exc).__name__}") from exc
    assert isinstance(resolved, list)
    return [str(w) for w in resolved]
