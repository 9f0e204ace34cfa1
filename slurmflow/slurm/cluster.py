"""The cluster as its commands describe it: `scontrol show config` and `sinfo --Node`, and the
per-partition summary `slurmflow cluster` shows. Pure parsers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slurmflow.errors import ParseError
from slurmflow.slurm.types import ClusterConfig

# --- scontrol show config -----------------------------------------------------------------------


def config_complete(stdout: str) -> bool:
    """Whether `scontrol show config` printed the whole configuration (its last section, the
    controllers' ping, may still say DOWN: see SlurmCLI.config)."""
    return stdout.startswith("Configuration data as of") and "MaxJobCount" in stdout and "MaxArraySize" in stdout


def parse_config(stdout: str) -> ClusterConfig:
    raw: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            raw[key.strip()] = value.strip()
    try:
        return ClusterConfig(
            version=raw.get("SLURM_VERSION", "unknown"),
            max_array_size=int(raw["MaxArraySize"]),
            max_job_count=int(raw["MaxJobCount"]),
            min_job_age_s=int(raw["MinJobAge"].split()[0]),
            raw=raw,
        )
    except (KeyError, ValueError) as exc:
        raise ParseError("scontrol show config", stdout[:200]) from exc


# --- sinfo --------------------------------------------------------------------------------------

SINFO_ARGV = ["sinfo", "--noheader", "--Node", "--format=%N|%P|%T|%G|%c|%m"]


def parse_sinfo(stdout: str) -> list[dict[str, str | int]]:
    """Rows of node, partition (a trailing '*' marks the default), state, GPUs, CPUs, memory (MB)."""
    rows: list[dict[str, str | int]] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 6:
            raise ParseError("sinfo output", line)
        node, part, state, gres, cpus, mem = (c.strip() for c in cols)
        rows.append(
            {
                "node": node,
                "partition": part.rstrip("*"),
                "default": part.endswith("*"),
                "state": state,
                "gpus": gpu_count(gres),
                "cpus": int(cpus),
                "memory_mb": int(mem.rstrip("+")) if mem.rstrip("+").isdigit() else 0,
            }
        )
    return rows


def gpu_count(gres: str) -> int:
    """'gpu:4', 'gpu:a100:4(S:0-1)', '(null)' -> 4, 4, 0."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


@dataclass
class Partition:
    name: str
    default: bool = False
    nodes: list[str] = field(default_factory=list)
    gpus: int = 0
    states: set[str] = field(default_factory=set)


def partitions(nodes: Sequence[dict[str, str | int]]) -> list[Partition]:
    """`parse_sinfo` rows per partition, by name: its nodes, their GPUs and states."""
    out: dict[str, Partition] = {}
    for n in nodes:
        p = out.setdefault(str(n["partition"]), Partition(str(n["partition"]), default=bool(n["default"])))
        p.nodes.append(str(n["node"]))
        p.gpus += int(n["gpus"])
        p.states.add(str(n["state"]))
    return [out[k] for k in sorted(out)]
