from __future__ import annotations

from pathlib import Path

import pytest

from slurmflow.errors import UsageError
from slurmflow.model import Edge, Resources, Stage, StageDep
from slurmflow.planning import planner
from slurmflow.slurm.types import ClusterInfo, DepKind

CLUSTER = ClusterInfo(
    max_array_size=1001, partition_gpus={"gpu": 4, "cpu": 0}, default_partition="gpu", accounts=frozenset({"lab-a"})
)


def demo(max_parallel: int | None = None) -> dict[str, Stage]:
    return {
        "prep": Stage("prep", command="p", resources=Resources(partition="cpu", time="00:05:00")),
        "train": Stage(
            "train",
            command="t",
            per_trial=True,
            deps=(StageDep(DepKind.AFTER_OK, "prep"),),
            resources=Resources(gpus=1, time="00:30:00"),
            max_parallel=max_parallel,
        ),
        "eval": Stage("eval", command="e", per_trial=True, deps=(StageDep(DepKind.AFTER_CORR, "train"),)),
        "report": Stage("report", command="r", deps=(StageDep(DepKind.AFTER_ANY, "eval"),)),
        "on_failure": Stage("on_failure", command="n", deps=(StageDep(DepKind.AFTER_NOT_OK, "train"),)),
    }


def test_small_plan_shape() -> None:
    plan = planner.plan("demo", demo(), 6, CLUSTER)
    assert [n.key for n in plan.nodes] == ["prep", "train.0", "eval.0", "report", "on_failure"]
    assert plan.node("train.0").array_expr() == "0-5"
    assert plan.node("eval.0").edges == (Edge(DepKind.AFTER_CORR, "train.0"),)
    assert plan.node("prep").array_expr() is None
    assert plan.tasks() == 15 and plan.gpu_hours == pytest.approx(3.0)


def test_chunks_restart_at_zero_with_offsets_and_corr_pairs_chunks() -> None:
    plan = planner.plan("demo", demo(), 2500, CLUSTER)
    train = [n for n in plan.nodes if n.stage == "train"]
    assert [(n.size, n.offset, n.array_expr()) for n in train] == [
        (1001, 0, "0-1000"),
        (1001, 1001, "0-1000"),
        (498, 2002, "0-497"),
    ]
    assert [n.edges for n in plan.nodes if n.stage == "eval"] == [
        (Edge(DepKind.AFTER_CORR, f"train.{i}"),) for i in range(3)
    ]
    report = plan.node("report")
    assert report.edges == tuple(Edge(DepKind.AFTER_ANY, f"eval.{i}") for i in range(3)) and not report.any_of
    # afternotok:a:b would need ALL chunks to fail: a failure handler joins them with '?'.
    assert plan.node("on_failure").any_of


def test_max_array_size_can_only_be_lowered() -> None:
    assert len([n for n in planner.plan("d", demo(), 10, CLUSTER, max_array_size=4).nodes if n.stage == "train"]) == 3
    assert (
        len([n for n in planner.plan("d", demo(), 10, CLUSTER, max_array_size=5000).nodes if n.stage == "train"]) == 1
    )


def test_every_parent_comes_first() -> None:
    for n in (1, 7, 1001, 1002, 5000):
        plan = planner.plan("d", demo(max_parallel=3), n, CLUSTER)
        seen: set[str] = set()
        for node in plan.nodes:
            assert all(e.parent in seen for e in node.edges)
            seen.add(node.key)
        assert sum(n.size for n in plan.nodes if n.stage == "train") == n


@pytest.mark.parametrize(
    ("total", "sizes", "want", "lag"),
    [
        (10, [1001, 1001, 498], [4, 4, 2], 0),
        (3, [1001, 1001, 498], [1, 1, 1], 0),
        (2, [1001, 1001, 498], [1, 1, 1], 2),
        (100, [3], [3], 0),
        (7, [5, 5], [4, 3], 0),
    ],
)
def test_split_throttle(total: int, sizes: list[int], want: list[int], lag: int) -> None:
    shares, got_lag = planner.split_throttle(total, sizes)
    assert (shares, got_lag) == (want, lag)
    assert sum(shares) <= max(total, len(sizes))


def test_throttle_below_chunk_count_chains_chunks() -> None:
    plan = planner.plan("d", demo(max_parallel=1), 2500, CLUSTER)
    train = [n for n in plan.nodes if n.stage == "train"]
    assert all(n.throttle == 1 for n in train)
    assert Edge(DepKind.AFTER_ANY, "train.0") in train[1].edges and Edge(DepKind.AFTER_ANY, "train.1") in train[2].edges


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ({"a": Stage("a", command="x", deps=(StageDep(DepKind.AFTER_OK, "nope"),))}, "unknown stage 'nope'"),
        (
            {
                "a": Stage("a", command="x", deps=(StageDep(DepKind.AFTER_OK, "b"),)),
                "b": Stage("b", command="x", deps=(StageDep(DepKind.AFTER_ANY, "a"),)),
            },
            "dependency cycle a -> b -> a",
        ),
        (
            {
                "a": Stage("a", command="x", per_trial=True),
                "b": Stage("b", command="x", deps=(StageDep(DepKind.AFTER_CORR, "a"),)),
            },
            "must both be per_trial",
        ),
        ({"a": Stage("a", command="x", resources=Resources(gpus=8))}, "no node of partition 'gpu' has more than 4"),
        ({"a": Stage("a", command="x", resources=Resources(partition="huge"))}, "no partition 'huge'"),
        ({"a": Stage("a", command="x", resources=Resources(partition="gpu,huge"))}, "no partition 'huge'"),
        (
            {"a": Stage("a", command="x", resources=Resources(partition="cpu,gpu", gpus=5))},
            "no node of partition 'cpu,gpu' has more than 4",
        ),
        ({"a": Stage("a", command="x", resources=Resources(account="lab-z"))}, "no association with account 'lab-z'"),
    ],
)
def test_invalid_plans(stages: dict[str, Stage], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        planner.plan("d", stages, 3, CLUSTER)


def test_a_partition_list_is_checked_name_by_name() -> None:
    stage = Stage("a", command="x", resources=Resources(partition="cpu,gpu", gpus=4))
    assert planner.plan("d", {"a": stage}, 3, CLUSTER).nodes[0].key == "a"


def test_empty_sweep() -> None:
    with pytest.raises(UsageError, match="no trials"):
        planner.plan("d", demo(), 0, CLUSTER)


def test_unbounded_gpu_hours_are_reported() -> None:
    stages = {"t": Stage("t", command="x", per_trial=True, resources=Resources(gpus=2))}
    plan = planner.plan("d", stages, 4, CLUSTER)
    assert plan.gpu_hours == 0 and plan.gpu_hours_unbounded == ("t",)


@pytest.mark.parametrize(
    ("time", "hours"), [("30", 0.5), ("1:30", 1.5 / 60), ("02:00:00", 2.0), ("1-12", 36.0), ("1-00:30:00", 24.5)]
)
def test_resource_hours(time: str, hours: float) -> None:
    assert Resources(time=time).hours() == pytest.approx(hours)


def test_a_dotted_callable_is_located_without_running_its_package(tmp_path: Path) -> None:
    from slurmflow.run.launch import _locate

    (tmp_path / "pkg" / "jobs").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    (tmp_path / "pkg" / "jobs" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "jobs" / "train.py").write_text("def main(cfg): return cfg\n")
    found = _locate("pkg.jobs.train", [str(tmp_path)])
    assert found is not None and found.origin == str(tmp_path / "pkg" / "jobs" / "train.py")
    assert _locate("pkg.jobs.nope", [str(tmp_path)]) is None and _locate("pkg.nope.x", [str(tmp_path)]) is None
    assert not (tmp_path / "ran").exists()


def test_a_stage_this_machine_can_never_run_is_refused_at_plan_time() -> None:
    """On the local engine a task too big for the machine would pend for ever."""
    machine = ClusterInfo(partition_gpus={"*": 1}, default_partition="local", cpus=4, mem_mb=8192)

    def one(**res: object) -> dict[str, Stage]:
        return {"s": Stage("s", command="c", resources=Resources(**res))}  # type: ignore[arg-type]

    assert planner.plan("x", one(gpus=1, cpus=4, mem="8G"), 1, machine).tasks() == 1
    cases: list[tuple[dict[str, object], str]] = [
        ({"gpus": 2}, "stages.s.resources.gpus: 2 GPUs per task, but this machine has 1"),
        ({"cpus": 5}, "stages.s.resources.cpus: 5 CPUs per task, but this machine has 4"),
        ({"mem": "9G"}, "stages.s.resources.mem: 9G per task, but this machine has 8192 MB"),
    ]
    for res, needle in cases:
        with pytest.raises(UsageError, match=needle):
            planner.plan("x", one(**res), 1, machine)
