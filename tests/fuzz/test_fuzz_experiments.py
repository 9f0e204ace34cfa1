"""Generated and mutated experiments, overrides and options through `slurmflow plan` and `launch`.

Whatever the input: never a traceback, exit 0 or 2, a refusal in one line that names the problem.
A valid experiment is planned as written (trials, arrays and chunks, requeue, GPU-hours); bad input
is refused, or, where it has one plain meaning (`per_trial: 'false'`), planned with that meaning.
`plan` writes nothing and imports no user code; a refused `launch` queues no job and leaves no run
directory behind, and an accepted one queues every task of its plan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, note

from tests.fuzz import strategies
from tests.fuzz.conftest import Answer, Written, check_answer, examples, queue_only, run_cli, tree, written
from tests.fuzz.strategies import Case, Verdict


def argv(command: str, case: Case, w: Written, *, json_out: bool = True) -> list[str]:
    base = [command, "--backend", "local", "--local-gpus", "2", "-cd", str(w.config_dir)]
    base += ["--runs-dir", str(w.runs_dir), *(["--json"] if json_out else [])]
    return [*base, *(w.fill(o) for o in case.options), *(w.fill(o) for o in case.overrides)]


def record_of(plan: dict[str, Any], stage: str, path: tuple[str, ...]) -> Any:
    value: Any = plan["stages"][stage]
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def same(actual: Any, expected: Any) -> bool:
    """Equal, and of the same type: True is not 1, 'false' is not False."""
    return type(actual) is type(expected) and actual == expected


def check_plan(doc: dict[str, Any], case: Case) -> None:
    """The plan `plan --json` printed is the experiment the case means."""
    intent, what = case.intent, case.what
    plan = doc["plan"]
    n = intent.n_trials
    assert plan["n_trials"] == n, f"[{what}] {plan['n_trials']} trials planned, the sweep has {n}"
    assert set(plan["stages"]) == set(intent.stages), f"[{what}] stages {sorted(plan['stages'])}"
    expected_hours, unbounded, tasks = 0.0, set(), 0
    for name, want in intent.stages.items():
        record = plan["stages"][name]
        nodes = [node for node in plan["nodes"] if node["stage"] == name]
        arrays = {node["array"] for node in nodes}
        assert arrays == {want.per_trial}, f"[{what}] {name}: per_trial {want.per_trial!r}, planned arrays {arrays}"
        assert same(record["per_trial"], want.per_trial), f"[{what}] {name}.per_trial read as {record['per_trial']!r}"
        assert same(record["singleton"], want.singleton), f"[{what}] {name}.singleton read as {record['singleton']!r}"
        assert same(record["requeue"], want.requeue), f"[{what}] {name}.requeue read as {record['requeue']!r}"
        assert same(record["max_parallel"], want.max_parallel), (
            f"[{what}] {name}.max_parallel read as {record['max_parallel']!r}"
        )
        gpus = record["resources"]["gpus"]
        assert same(gpus, want.gpus), f"[{what}] {name}.resources.gpus read as {gpus!r}"
        size = n if want.per_trial else 1
        assert sum(node["size"] for node in nodes) == size, f"[{what}] {name}: {nodes}"
        if want.per_trial and intent.max_array_size is not None:
            limit = intent.max_array_size
            assert all(node["size"] <= limit for node in nodes), f"[{what}] {name}: an array above {limit}"
            assert len(nodes) == math.ceil(n / limit), f"[{what}] {name}: {len(nodes)} arrays for {n} trials"
        tasks += size
        if want.gpus and want.hours is None:
            unbounded.add(name)
        elif want.gpus and want.hours is not None:
            expected_hours += size * want.gpus * want.hours
    assert doc["tasks"] == tasks, f"[{what}] {doc['tasks']} tasks, expected {tasks}"
    assert math.isclose(plan["gpu_hours"], expected_hours, rel_tol=1e-6, abs_tol=1e-6), (
        f"[{what}] {plan['gpu_hours']} GPU-hours planned, the time limits give {expected_hours}"
    )
    assert set(plan["gpu_hours_unbounded"]) == unbounded, (
        f"[{what}] stages without a time limit: {plan['gpu_hours_unbounded']}, expected {sorted(unbounded)}"
    )
    for stage, path, value in intent.echo:
        got = record_of(plan, stage, path)
        assert same(got, value), f"[{what}] {stage}.{'.'.join(path)} read as {got!r}, meaning {value!r}"


def judge(answer: Answer, case: Case, *, json_out: bool) -> None:
    """The verdict the case deserves, on top of what every answer must be."""
    check_answer(answer, case.what, case.names, case.forbid)
    if case.verdict is Verdict.REFUSE:
        assert answer.code == 2, f"[{case.what}] accepted (exit 0), must be refused"
    if case.verdict is Verdict.PLAN:
        assert answer.code == 0, f"[{case.what}] a valid experiment refused: {answer.stderr.strip()}"
    if answer.code == 0 and json_out:
        try:
            doc = json.loads(answer.stdout)
        except ValueError as exc:
            raise AssertionError(f"[{case.what}] --json printed more than JSON: {answer.stdout[:300]!r}") from exc
        if case.verdict in (Verdict.PLAN, Verdict.EITHER) and "plan" in doc:
            check_plan(doc, case)


def plan_once(case: Case, *, json_out: bool = True) -> None:
    note(case.what)
    with written(case.files) as w:
        before = tree(w.root)
        answer = run_cli(argv("plan", case, w, json_out=json_out), w.root)
        judge(answer, case, json_out=json_out)
        assert not w.imported_user_code(), f"[{case.what}] plan imported user code (or ran a YAML tag)"
        after = tree(w.root)
        assert after == before, f"[{case.what}] plan wrote {sorted(set(after) ^ set(before))[:5]}"


@examples(80)
@given(case=strategies.valid_cases())
def test_valid_experiments_are_planned_as_written(case: Case) -> None:
    plan_once(case)


@examples(200)
@given(case=strategies.mutated_cases())
def test_bad_experiments_are_refused_in_one_line(case: Case) -> None:
    plan_once(case)


@examples(15)
@given(case=strategies.dotted_callable_cases())
def test_plan_locates_callables_without_importing_them(case: Case) -> None:
    """A callable's module is found, never imported, at plan time (importing user code could have
    side effects): `package.module:function` must not import the package either."""
    plan_once(case)


@examples(30)
@given(case=strategies.mutated_cases())
def test_plan_scripts_render_or_refuse(case: Case) -> None:
    """`plan --scripts` also renders every sbatch line: bad values must be refused before that."""
    plan_once(case, json_out=False)


@examples(60)
@given(case=strategies.launch_cases())
def test_launch_submits_everything_or_nothing(case: Case) -> None:
    note(case.what)
    with written(case.files) as w, queue_only() as queues:
        before = tree(w.root)
        answer = run_cli(argv("launch", case, w), w.root)
        judge(answer, case, json_out=True)
        queued = [job for q in queues for job in q.tasks.values()]
        assert not w.imported_user_code(), f"[{case.what}] launch imported user code (or ran a YAML tag)"
        if answer.code != 0:
            assert not queued, f"[{case.what}] refused, yet {len(queued)} job(s) in the queue"
            after = tree(w.root)
            # An empty runs directory may stay; a run directory, or anything in one, may not.
            left = sorted(p for p in after if p != "runs" and (p not in before or after[p] != before[p]))
            assert not left, f"[{case.what}] refused, yet left behind: {left[:5]}"
            return
        doc = json.loads(answer.stdout)
        run_dir = Path(doc["run_dir"])
        plan = json.loads((run_dir / "plan.json").read_text())
        tasks = sum(node["size"] if node["array"] else 1 for node in plan["nodes"])
        assert len(queued) == tasks, f"[{case.what}] {len(queued)} jobs queued for a plan of {tasks} tasks"
        trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
        ids = [t["id"] for t in trials]
        assert len(trials) == plan["n_trials"], f"[{case.what}] {len(trials)} trials recorded"
        assert len(set(ids)) == len(ids), f"[{case.what}] two trials share an id (the same overrides twice): {ids}"
