"""A search run's study in `report`, `results` and `status`: the fixture campaign
(tests/fixtures/results_exp, 4 trials on the local engine) made a search run by its launch.json,
with an Optuna study in a SQLite file beside it, opened through the engine's `open_study` (stood in
for here: the study is this test's own)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from slurmflow.cli import views
from slurmflow.cli.main import main
from slurmflow.monitoring.observe import campaign
from slurmflow.run import schedulers
from slurmflow.rundir.store import RunStore
from slurmflow.search import study as engine
from tests import browser
from tests.component.test_report import finished_fixture

TARGET = 6

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of one finished campaign: one left as it is, one made a search run."""
    work = tmp_path_factory.mktemp("study") / "exp"
    plain = finished_fixture(work)  # the seed=3 trials fail, as the fixture means
    search = work / "search-run"
    shutil.copytree(plain, search)
    launch = json.loads((search / "launch.json").read_text())
    launch["search"] = {"n_trials": TARGET, "batch": 2}
    (search / "launch.json").write_text(json.dumps(launch))
    study = optuna.create_study(
        storage=f"sqlite:///{search / 'test-study.db'}", study_name="resexp-study", direction="maximize"
    )
    space = {"lr": FloatDistribution(0.01, 1.0), "seed": IntDistribution(0, 5)}
    for index, (lr, seed, state, value) in enumerate(
        [
            (0.1, 2, TrialState.COMPLETE, 0.2),
            (0.1, 3, TrialState.FAIL, None),
            (0.3, 2, TrialState.COMPLETE, 0.4),
            (0.3, 3, TrialState.PRUNED, None),
            (0.5, 1, TrialState.COMPLETE, 0.3),
            (0.7, 4, TrialState.RUNNING, None),
        ]
    ):
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": lr, "seed": seed},
                distributions=space,
                user_attrs={"slurmflow_trial": index},
            )
        )
    return plain, search


@pytest.fixture(autouse=True)
def stand_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's `open_study`, for this test's study: a run with "search" gets its SQLite file."""

    def open_study(store: RunStore) -> optuna.Study | None:
        if "search" not in store.read_json("launch.json"):
            return None
        return optuna.load_study(study_name="resexp-study", storage=f"sqlite:///{store.path('test-study.db')}")

    monkeypatch.setattr(engine, "open_study", open_study)
    monkeypatch.setenv("COLUMNS", "200")  # one panel line per line: rich reads the terminal's width from it


def sf(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_the_report_has_a_search_section_with_its_figures(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, search = runs
    sf(capsys, "report", str(search), "--out", str(tmp_path / "search.html"))
    text = (tmp_path / "search.html").read_text()
    section = re.search(r'<section id="search">(.*?)</section>', text, re.S)
    assert section, "no Search section"
    body = section.group(1)
    assert "<h2>Search</h2>" in body and '<a href="#search">search</a>' in text
    assert "5/6 done · 1 running · 1 pruned · 1 failed · best test_accuracy 0.4 (trial 2)" in body
    assert "trial 2 (Optuna #2)" in body and "lr=0.3 seed=2" in body
    for fig in ("study-history-0", "study-importance-0"):
        assert f'<div id="{fig}" class="sf-figure"></div>' in body
    history = re.search(r'var data = (\[.*?\]); sfFigure\("study-history-0"', body)
    assert history
    value, best = json.loads(history.group(1))
    assert value["y"] == [0.2, 0.4, 0.3] and best["y"] == [0.2, 0.4, 0.4]  # best so far, maximised
    assert [c[0] for c in value["customdata"]] == [0, 2, 4]  # slurmflow's trial numbers in the hover
    importance = re.search(r'var data = (\[.*?\]); sfFigure\("study-importance-0"', body)
    assert importance and set(json.loads(importance.group(1))[0]["y"]) == {"lr", "seed"}
    assert not re.findall(r"<script[^>]*\bsrc\s*=", text)  # nothing fetched: plotly.js is the page's own

    try:  # as a reader sees it: every figure drawn, no error, nothing fetched
        check = browser.open_report(tmp_path / "search.html", tmp_path / "search.png")
    except RuntimeError as e:
        pytest.fail(str(e))
    assert check.console_errors == [] and check.fetched == []
    assert check.rendered == check.figures >= 5  # the DAG, the Gantt, a curve, the history, the importances

    sf(capsys, "report", str(plain), "--out", str(tmp_path / "plain.html"))
    unchanged = (tmp_path / "plain.html").read_text()
    assert 'id="search"' not in unchanged and "study-" not in unchanged


def test_results_show_the_study_panel_and_json(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain, search = runs
    out = sf(capsys, "results", str(search))
    assert "Study: 5/6 done · 1 running · 1 pruned · 1 failed · best test_accuracy 0.4 (trial 2)" in out
    assert "Study: resexp-study" in out and re.search(r"importance: (lr|seed) \d\.\d\d, (lr|seed) \d\.\d\d", out)
    assert out.index("Study:") < out.index("rank")  # above the table
    doc = json.loads(sf(capsys, "results", str(search), "--json"))
    study = doc["runs"][0]["study"]
    assert study["counts"] == {"complete": 3, "running": 1, "pruned": 1, "failed": 1, "waiting": 0}
    assert (study["target"], study["objectives"], study["best"][0]["trial"]) == (TARGET, ["test_accuracy"], 2)
    assert [h["trial"] for h in study["history"]] == [0, 2, 4]
    both = json.loads(sf(capsys, "results", str(plain), str(search), "--json"))
    assert "study" not in both["runs"][0] and both["runs"][1]["study"]["study_name"] == "resexp-study"

    plain_out = sf(capsys, "results", str(plain))
    assert "Study" not in plain_out
    assert "study" not in json.loads(sf(capsys, "results", str(plain), "--json"))["runs"][0]


def test_an_unreadable_study_is_named_and_the_results_still_shown(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(store: RunStore) -> optuna.Study | None:
        raise OSError("database is locked")

    monkeypatch.setattr(engine, "open_study", broken)
    out = sf(capsys, "results", str(runs[1]))
    assert "the study cannot be read: OSError: database is locked" in out and "rank" in out
    doc = json.loads(sf(capsys, "results", str(runs[1]), "--json"))
    assert doc["runs"][0]["study"] == {"error": "the study cannot be read: OSError: database is locked"}


def test_status_shows_one_line_for_the_study(runs: tuple[Path, Path]) -> None:
    from slurmflow.cli.results import study_of

    plain, search = runs
    for path, study in ((search, study_of(RunStore(search), importances=False)), (plain, None)):
        store = RunStore(path)
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(views.status_view(campaign(store, schedulers.of_run(store)), study=study))
        text = console.export_text()
        line = "study: 5/6 done · 1 running · 1 pruned · 1 failed · best test_accuracy 0.4 (trial 2)"
        assert (line in text) == (study is not None), text
    assert study_of(RunStore(plain)) is None


def test_names_from_the_experiment_are_escaped() -> None:
    from slurmflow.results import study_report
    from slurmflow.results.study_view import summarize

    evil = "<script>alert(1)</script>"
    study = optuna.create_study()
    for i in range(3):
        study.add_trial(
            create_trial(
                value=float(i),
                params={evil: float(i), "b": i},
                distributions={evil: FloatDistribution(0, 5), "b": IntDistribution(0, 5)},
                user_attrs={"slurmflow_trial": i},
            )
        )
    html = study_report.content(summarize(study, 3, objectives=[evil]))
    assert evil not in html and "&lt;script&gt;" in html
    assert 'id="study-history-0"' in html and 'id="study-importance-0"' in html
