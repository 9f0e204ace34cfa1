"""Sweep axes -> trials with stable ids. Pure: the grammar is parsed by `config` (Hydra's own
override parser), so here an axis is just a key and its values, already as override strings."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from slurmflow.model import Trial


@dataclass(frozen=True)
class Axis:
    """One swept key: `model.lr` over ['0.001', '0.0003'], or a config group over its options."""

    key: str
    values: tuple[str, ...]
    group: bool = False  # a config-group choice (model=resnet), not a value
    # The same values as Hydra's grammar types them (0.3, 'a b', [1, 2]); None for a group.
    typed: tuple[Any, ...] | None = None
    prefix: str = ""  # "+" for a key the sweep adds (`+new=a,b`): each trial's override adds it

    def override(self, value: str) -> str:
        return f"{self.prefix}{self.key}={value}"


def trial_id(overrides: Sequence[str]) -> str:
    """A short stable id: the same overrides give the same id in any order, on any machine."""
    digest = hashlib.sha1("\n".join(sorted(overrides)).encode(), usedforsecurity=False).hexdigest()
    return digest[:12]


def count(axes: Sequence[Axis]) -> int:
    n = 1
    for axis in axes:
        n *= len(axis.values)
    return n


def expand(axes: Sequence[Axis]) -> Iterator[Trial]:
    """The cartesian product in Hydra's --multirun order: the last axis varies fastest."""
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        overrides = tuple(a.override(v) for a, v in zip(axes, combo, strict=True))
        yield Trial(index, trial_id(overrides), overrides)


def representatives(axes: Sequence[Axis]) -> list[tuple[str, ...]]:
    """One override set per distinct combination of config-group choices, every other axis at its
    first value: composing these validates the whole sweep without composing every trial."""
    group_axes = [a for a in axes if a.group]
    firsts = tuple(a.override(a.values[0]) for a in axes if not a.group)
    if not group_axes:
        return [firsts]
    combos = itertools.product(*(a.values for a in group_axes))
    return [tuple(a.override(v) for a, v in zip(group_axes, c, strict=True)) + firsts for c in combos]
