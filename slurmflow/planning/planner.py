"""(stages, number of trials, cluster limits) -> Plan. Pure: no I/O, no job ids.

The DAG is built from node keys: `prep` for a single job, `train.0`, `train.1`, ... for the
chunks of a per-trial stage. MaxArraySize caps the highest array INDEX (man slurm.conf), so a
sweep larger than it is split into arrays whose indices restart at 0, each with an offset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from slurmflow.errors import UsageError
from slurmflow.model import Edge, JobNode, Plan, Stage
from slurmflow.slurm.types import ClusterInfo, DepKind
from slurmflow.slurm.units import megabytes

_FIELD = {
    DepKind.AFTER_OK: "after_ok",
    DepKind.AFTER_NOT_OK: "after_not_ok",
    DepKind.AFTER_ANY: "after_any",
    DepKind.AFTER_CORR: "after_corr",
}


def stage_order(stages: Mapping[str, Stage]) -> list[str]:
    """Topological order of stages (config order among equals); a cycle is a UsageError."""
    for stage in stages.values():
        for dep in stage.deps:
            if dep.stage not in stages:
                raise UsageError(
                    f"stages.{stage.name}.{_FIELD[dep.kind]}: unknown stage {dep.stage!r} "
                    f"(stages: {', '.join(stages)}): fix the name"
                )
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise UsageError(f"stages: dependency cycle {' -> '.join(cycle)}: remove one of these dependencies")
        state[name] = 1
        for dep in stages[name].deps:
            visit(dep.stage, [*path, name])
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def chunk_sizes(n: int, max_array_size: int) -> list[int]:
    """[1001, 1001, ..., rest]: indices 0..size-1 per chunk, never above MaxArraySize - 1."""
    per = max(1, max_array_size)
    return [min(per, n - start) for start in range(0, n, per)]


def split_throttle(total: int, sizes: Sequence[int]) -> tuple[list[int], int]:
    """Split a campaign-wide cap on running tasks across chunks.

    Returns (per-chunk throttles, lag): with at least one slot per chunk, slots are shared in
    proportion to chunk size and never sum above `total`. With fewer slots than chunks, each chunk
    gets one slot and chunk k waits for chunk k-lag to finish (lag = total), so at most `total`
    tasks run at once.
    """
    if total < len(sizes):
        return [1] * len(sizes), total
    n = sum(sizes)
    exact = [total * s / n for s in sizes]
    shares = [max(1, min(s, math.floor(e))) for s, e in zip(sizes, exact, strict=True)]
    spare = total - sum(shares)
    for i in sorted(range(len(sizes)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True):
        if spare <= 0:
            break
        if shares[i] < sizes[i]:
            shares[i] += 1
            spare -= 1
    return shares, 0


def _check_resources(stage: Stage, cluster: ClusterInfo) -> None:
    res = stage.resources
    where = f"stages.{stage.name}.resources"
    partition = res.partition or cluster.default_partition
    if "*" in cluster.partition_gpus:  # the local engine: one node serving every partition
        # A task this machine can never run would pend for ever: refused now.
        if res.gpus > cluster.partition_gpus["*"]:
            raise UsageError(
                f"{where}.gpus: {res.gpus} GPUs per task, but this machine has {cluster.partition_gpus['*']} "
                "(--local-gpus sets the slots)"
            )
        if cluster.cpus is not None and (res.cpus or 1) > cluster.cpus:
            raise UsageError(f"{where}.cpus: {res.cpus} CPUs per task, but this machine has {cluster.cpus}")
        if cluster.mem_mb is not None and res.mem is not None and megabytes(res.mem) > cluster.mem_mb:
            raise UsageError(f"{where}.mem: {res.mem} per task, but this machine has {cluster.mem_mb} MB")
    elif cluster.partition_gpus and partition is not None:
        # `cpu,gpu`: Slurm starts the job in whichever listed partition can run it first (man sbatch).
        names = [p.strip() for p in partition.split(",")]
        for name in names:
            if name not in cluster.partition_gpus:
                known = ", ".join(sorted(cluster.partition_gpus))
                raise UsageError(f"{where}.partition: no partition {name!r} on this cluster (partitions: {known})")
        most = max(cluster.partition_gpus[name] for name in names)
        if res.gpus > most:
            raise UsageError(
                f"{where}.gpus: {res.gpus} GPUs per task, but no node of partition {partition!r} has more than {most}"
            )
    if res.account is not None and cluster.accounts is not None and res.account not in cluster.accounts:
        mine = ", ".join(sorted(cluster.accounts)) or "none"
        raise UsageError(f"{where}.account: you have no association with account {res.account!r} (yours: {mine})")


def plan(
    experiment: str,
    stages: Mapping[str, Stage],
    n_trials: int,
    cluster: ClusterInfo,
    *,
    max_array_size: int | None = None,
    chunks: Sequence[int] | None = None,
) -> Plan:
    """Build the DAG. `max_array_size` may lower the cluster's limit (never raise it). `chunks`
    gives the arrays' sizes instead (a search: one array per batch of trials asked for, each
    within the limit already); with it the plan may have no trials yet."""
    if n_trials < 1 and chunks is None:
        raise UsageError("sweep: yields no trials; check the sweep values")
    limit = cluster.max_array_size if max_array_size is None else min(max_array_size, cluster.max_array_size)
    order = stage_order(stages)
    for stage in stages.values():
        _check_resources(stage, cluster)
        for dep in stage.deps:
            parent = stages[dep.stage]
            if dep.kind is DepKind.AFTER_CORR and not (stage.per_trial and parent.per_trial):
                raise UsageError(
                    f"stages.{stage.name}.after_corr: pairs array tasks, so {stage.name} and {dep.stage} must both be "
                    "per_trial (same size); use after_ok or after_any otherwise"
                )

    sizes = chunk_sizes(n_trials, limit) if chunks is None else list(chunks)
    keys: dict[str, list[str]] = {}
    nodes: list[JobNode] = []
    gpu_hours = 0.0
    unbounded: list[str] = []
    for name in order:
        stage = stages[name]
        chunks = sizes if stage.per_trial else [1]
        keys[name] = [f"{name}.{i}" for i in range(len(chunks))] if stage.per_trial else [name]
        throttles: list[int | None] = [None] * len(chunks)
        lag = 0
        if stage.max_parallel is not None and stage.per_trial:
            split, lag = split_throttle(stage.max_parallel, chunks)
            throttles = list(split)
        multi_not_ok = any(d.kind is DepKind.AFTER_NOT_OK and len(keys[d.stage]) > 1 for d in stage.deps)
        if multi_not_ok and len(stage.deps) > 1:
            raise UsageError(
                f"stages.{name}.after_not_ok: on a stage split into several arrays it must be the only "
                "dependency (Slurm joins with one separator kind); move the others to another stage"
            )
        offset = 0
        for i, size in enumerate(chunks):
            edges: list[Edge] = []
            for dep in stage.deps:
                parents = keys[dep.stage]
                if dep.kind is DepKind.AFTER_CORR:
                    edges.append(Edge(dep.kind, parents[i]))
                else:
                    edges.extend(Edge(dep.kind, p) for p in parents)
            if lag and i >= lag:
                edges.append(Edge(DepKind.AFTER_ANY, keys[name][i - lag]))
            nodes.append(
                JobNode(
                    key=keys[name][i],
                    stage=name,
                    edges=tuple(edges),
                    size=size,
                    offset=offset,
                    array=stage.per_trial,
                    throttle=throttles[i],
                    singleton=stage.singleton,
                    any_of=multi_not_ok,
                )
            )
            offset += size
        gpus = stage.resources.gpus
        hours = stage.resources.hours()
        if gpus:
            if hours is None:
                unbounded.append(name)
            else:
                gpu_hours += sum(chunks) * gpus * hours
    return Plan(experiment, dict(stages), tuple(nodes), n_trials, gpu_hours, tuple(unbounded))
