"""Generated and mutated quota files through `slurmflow admin quota apply FILE --dry-run --json`,
against an accounting that knows accounts lab-a (alice, carol), lab-b (bob) and lab-c.

A valid file shows exactly the limits it declares as changes, and nothing is applied. A bad file
is refused in one line naming the problem, with no sacctmgr modify issued: never a traceback.
"""

from __future__ import annotations

import json

from hypothesis import given, note

from tests.fuzz import strategies
from tests.fuzz.conftest import Answer, check_answer, examples, fake_accounting, run_cli, written
from tests.fuzz.strategies import QuotaCase, Verdict


def apply_dry_run(case: QuotaCase) -> tuple[Answer, list[tuple[str, ...]], bool]:
    note(case.what)
    with written({"quota.yaml": case.content}) as w, fake_accounting() as runner:
        path = w.fill(case.path) if case.path is not None else str(w.root / "quota.yaml")
        answer = run_cli(["admin", "quota", "apply", path, "--dry-run", "--json"], w.root)
        return answer, list(runner.calls), w.imported_user_code()


def check_no_change_applied(case: QuotaCase, calls: list[tuple[str, ...]], ran_code: bool) -> None:
    modify = [c for c in calls if "modify" in c]
    assert not modify, f"[{case.what}] a dry run issued {modify[0]}"
    assert not ran_code, f"[{case.what}] reading the quota file ran code (a YAML tag)"


@examples(80)
@given(case=strategies.valid_quota_cases())
def test_valid_quota_files_show_what_they_declare(case: QuotaCase) -> None:
    answer, calls, ran_code = apply_dry_run(case)
    check_answer(answer, case.what)
    assert answer.code == 0, f"[{case.what}] a valid quota file refused: {answer.stderr.strip()}"
    check_no_change_applied(case, calls, ran_code)
    doc = json.loads(answer.stdout)
    shown = {(c["account"], c["user"], c["field"], json.dumps(c["declared"])) for c in doc["changes"]}
    assert shown == set(case.changes), (
        f"[{case.what}] changes shown {sorted(shown - case.changes)} beyond, {sorted(case.changes - shown)} missing"
    )
    associations = {(c[0], c[1]) for c in case.changes}
    assert len(doc["commands"]) == len(associations), f"[{case.what}] {doc['commands']}"
    assert doc["applied"] is False


@examples(250)
@given(case=strategies.mutated_quota_cases())
def test_bad_quota_files_are_refused_in_one_line(case: QuotaCase) -> None:
    answer, calls, ran_code = apply_dry_run(case)
    check_answer(answer, case.what, case.names)
    if case.verdict is Verdict.REFUSE:
        assert answer.code == 2, f"[{case.what}] accepted (exit 0), must be refused: {answer.stdout[:300]}"
    check_no_change_applied(case, calls, ran_code)
    if answer.code == 0:
        doc = json.loads(answer.stdout)
        for line in doc["commands"]:
            assert "\n" not in line and "\0" not in line, f"[{case.what}] a sacctmgr command {line!r}"
