"""The README's examples are what a reader copies: its YAML must parse, and its experiment example
must be a valid slurmflow experiment."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from slurmflow.experiment import config

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_every_yaml_block_parses() -> None:
    assert len(BLOCKS) >= 3
    for block in BLOCKS:
        yaml.safe_load(block)  # raises on the flow-mapping-with-${...} kind of mistake


def test_the_experiment_example_defines_valid_stages() -> None:
    doc = next(yaml.safe_load(b) for b in BLOCKS if "stages:" in b and "sweep:" in b)
    stages = {name: config.parse_stage(name, body) for name, body in doc["stages"].items()}
    assert {"prep", "train", "eval", "report", "summary", "on_failure"} <= set(stages)
