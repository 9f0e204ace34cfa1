"""Plan nodes to sbatch submissions: the job name every job of a run carries, the dependency on
parent job ids, and the JobSpec of a command stage. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from slurmflow.model import JobNode, Stage
from slurmflow.slurm.types import DepClause, Dependency, DepKind, JobSpec


def job_name(run_id: str, key: str) -> str:
    """Every job of a run carries the run id in its name: one `--name` query finds them all, and
    a resume reconciles by it before submitting again."""
    return f"sf.{run_id}.{key}"


def node_dependency(
    node: JobNode, parent_ids: Mapping[str, str], dropped: frozenset[str] = frozenset()
) -> Dependency | None:
    """Edges -> a Dependency on job ids. Edges to `dropped` parents (already known satisfied) are
    left out: a dependency on a job older than MinJobAge would be unknown to the controller."""
    edges = [e for e in node.edges if e.parent not in dropped]
    clauses: list[DepClause] = []
    if node.any_of:
        clauses = [DepClause(e.kind, (parent_ids[e.parent],)) for e in edges]
    else:
        by_kind: dict[DepKind, list[str]] = {}
        for e in edges:
            by_kind.setdefault(e.kind, []).append(parent_ids[e.parent])
        clauses = [DepClause(kind, tuple(ids)) for kind, ids in by_kind.items()]
    if node.singleton:
        clauses.append(DepClause(DepKind.SINGLETON))
    return Dependency(tuple(clauses), any_of=node.any_of) if clauses else None


def node_spec(
    node: JobNode,
    stage: Stage,
    parent_ids: Mapping[str, str],
    *,
    run_id: str,
    script: str,
    logs_dir: str,
    chdir: str,
    dropped: frozenset[str] = frozenset(),
) -> JobSpec:
    res = stage.resources
    log = f"{logs_dir}/{node.log_file()}"
    return JobSpec(
        name=job_name(run_id, node.key),
        script=script,
        partition=res.partition,
        account=res.account,
        qos=res.qos,
        gpus_per_task=res.gpus,
        cpus_per_task=res.cpus,
        mem=res.mem,
        time=res.time,
        array=node.array_expr(),
        dependency=node_dependency(node, parent_ids, dropped),
        requeue=stage.requeue,
        comment=f"slurmflow:{run_id}:{node.key}",
        output=log,
        chdir=chdir,
        constraint=res.constraint,
        # A requeued task writes to the same log: keep what earlier attempts wrote.
        extra_args=("--open-mode=append", *res.extra),
        # B: the warning goes to the batch shell only, which is the task wrapper (the script execs it).
        signal=f"B:{stage.checkpoint.signal}@{stage.checkpoint.seconds}" if stage.checkpoint else None,
    )
