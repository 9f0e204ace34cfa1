"""Hydra override text: a value written so that Hydra's override grammar parses it back to exactly
that value, and a Hydra app's command line for one trial (an `app:` stage). The trial's values are
data: each is resolved against the trial's config (trialcfg) and given to the app's Hydra as
exactly itself, never as override grammar or an interpolation of the app's config.

Like trialcfg, this imports no Hydra: it runs in every task of an app stage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from slurmflow.errors import UsageError
from slurmflow.experiment import trialcfg


def hydra_value(value: Any, *, literal: bool = False) -> str:
    """A YAML value as Hydra override text that parses back to exactly that value: strings are
    quoted, so 'a,b' stays one value and 'c d' keeps its space. `literal`: a ${ in a string is
    text, never an interpolation of the config it lands in (a value slurmflow puts in an app's
    command line is data)."""
    if isinstance(value, str):
        if literal:  # OmegaConf's escape: \${ is a literal ${, and backslashes before it double
            value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
        # Hydra's quoted strings: a backslash escapes only a quote or the backslashes before one.
        body = re.sub(r"(\\*)('|\Z)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
        return f"'{body}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"  # Hydra's spelling
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v, literal=literal) for v in value) + "]"
    if isinstance(value, dict):
        bad = next((k for k in value if not isinstance(k, str) or not _DICT_KEY.fullmatch(k)), None)
        if bad is not None:
            raise UsageError(f"the mapping key {bad!r} cannot be written in Hydra's override grammar: rename it")
        return "{" + ",".join(f"{k}:{hydra_value(v, literal=literal)}" for k, v in value.items()) + "}"
    raise UsageError(f"sweep value {value!r}: not a YAML scalar, list or mapping")


_DICT_KEY = re.compile(r"[A-Za-z_][\w-]*", re.ASCII)
_JOB_TIME = re.compile(r"\$\{\s*(oc\.env|hydra)\s*:")
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[\w.@/-]+", re.ASCII)


def app_argv(app: str, overrides: Sequence[str], cfg: DictConfig, output_dir: str, python: str) -> list[str]:
    """A Hydra app (a script, or a module run with -m) with the stage's overrides, each value
    resolved against the trial's config and given to the app's Hydra as exactly that value, and
    its output directory set (`hydra.run.dir`). Overrides whose value is only job-time
    interpolations (`${oc.env:...}`, `${hydra:...}`) reach the app's Hydra as written."""
    head = [python, app] if app.endswith(".py") or "/" in app else [python, "-m", app]
    words = [app_override(o, cfg) for o in overrides]
    return [*head, *words, f"hydra.run.dir={hydra_value(output_dir, literal=True)}"]


def app_override(override: str, cfg: DictConfig) -> str:
    key, eq, value = override.partition("=")
    if not eq or "${" not in value:
        return override
    if not _OVERRIDE_KEY.fullmatch(key):
        raise UsageError(f"override {override!r}: {key!r} is not a config key of the app")
    pieces = trialcfg.pieces(value)
    if all(_JOB_TIME.match(text) for inter, text in pieces if inter):
        return override  # the app's Hydra resolves these, in the job
    if len(pieces) == 1 and pieces[0][0]:  # key=${x}: x's value, its type kept (0.1 stays a float)
        return f"{key}={hydra_value(_typed(pieces[0][1], cfg), literal=True)}"
    text = "".join(trialcfg.resolve(t, cfg, bash=False) if inter else t for inter, t in pieces)
    return f"{key}={hydra_value(text, literal=True)}"


def _typed(source: str, cfg: DictConfig) -> Any:
    holder = OmegaConf.create({"v": source}, parent=cfg)
    try:
        value = holder["v"]
    except OmegaConfBaseException as exc:
        raise UsageError(f"cannot resolve {source}: {trialcfg.first_line(exc)}") from exc
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
