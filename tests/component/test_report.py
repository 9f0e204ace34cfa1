"""The HTML report of a real (local engine) campaign, as a browser renders it; and the terminal
Gantt of the same run.

The campaign (tests/fixtures/results_exp) runs 4 trials; those with seed=3 fail in train, so their
eval never runs. The screenshot is kept under tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import dataclasses
import io
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from slurmflow.gpu import stats as gpustats
from slurmflow.gpu.usage import RunGpu, TaskGpu
from slurmflow.results import collect, gantt, report
from slurmflow.results.collect import RunResults
from slurmflow.run import schedulers
from slurmflow.rundir.store import RunStore
from tests import browser

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "results_exp"
ARTIFACTS = REPO / "tests" / "artifacts"


def finished_fixture(work: Path) -> Path:
    """A copy of the fixture campaign at `work`, run to its end on the local engine: its run directory."""
    shutil.copytree(FIXTURE, work)
    done = subprocess.run(
        [sys.executable, "-m", "slurmflow", "launch", "--backend", "local", "-cd", ".", "--runs-dir", "runs"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # a foreground local launch: 1 when a task failed
    (run_dir,) = (work / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    """The fixture campaign, launched on the local engine (the launch waits for the end)."""
    store = RunStore(finished_fixture(tmp_path_factory.mktemp("results_exp") / "exp"))
    backend = schedulers.of_run(store)
    # A scheduler without a history query leaves the times to the tasks' status files.
    return collect.collect(store, backend if hasattr(backend, "history") else None)


@pytest.fixture(scope="module")
def page(results: RunResults, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report.write(results, tmp_path_factory.mktemp("report") / "report.html")


def test_the_report_renders_every_attempt_and_trial(results: RunResults, page: Path) -> None:
    try:
        check = browser.open_report(page, ARTIFACTS / "report.png")
    except RuntimeError as e:
        pytest.fail(str(e))
    assert check.console_errors == []
    assert check.fetched == []  # nothing from the network, nothing beside the file
    assert check.rendered == check.figures >= 3  # the DAG, the Gantt, a learning curve
    segments = gantt.segments(results)
    started = sum(1 for t in results.tasks for a in t.attempts if a.start is not None)
    assert started == sum(1 for s in segments if s.kind == gantt.RUNNING) >= 8  # prep, 4 train, 2 eval, collect
    assert check.gantt_running == started
    assert check.gantt_pending == sum(1 for s in segments if s.kind == gantt.PENDING)
    assert check.gantt_points == len(segments)
    assert check.table_rows == len(results.trials) == 4
    failed = {t.index for t in results.trials if t.state == "FAILED"}
    assert failed == {t.index for t in results.trials if "seed=3" in t.overrides}
    assert {i for i, state in check.states.items() if state == "FAILED"} == failed
    assert check.screenshot.exists() and check.size[1] > 1500
    assert check.gantt_ink > 500, f"the Gantt looks blank in {check.screenshot}"
    job, node, attempt, state, start, end, took = check.hover  # what the first bar's hover box says
    attempts = {(a.job_id, a.node, a.state.name) for t in results.tasks for a in t.attempts}
    assert (job, node, state) in attempts and attempt == "1", check.hover
    clock = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(clock, start) and re.fullmatch(clock, end) and re.fullmatch(r"[\d.]+s", took), check.hover
    trials = sorted(t.index for t in results.trials)
    assert check.sorted_by_trial == (trials, trials[::-1])


def test_the_report_is_self_contained(page: Path) -> None:
    text = page.read_text()
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", text)
    assert tags and not [t for t in tags if re.search(r"\b(?:src|href)\s*=", t)]
    assert text.count("<script>") >= 4  # plotly.js, the page's own, one per figure


def test_the_report_lists_trials_with_their_states(results: RunResults, page: Path) -> None:
    text = page.read_text()
    for t in results.trials:
        row = re.search(rf'<tr data-trial="{t.index}" data-state="([A-Z_]+)">(.*?)</tr>', text)
        assert row and row.group(1) == t.state
        assert " ".join(t.overrides) in row.group(2)
    assert text.count('<tr data-task="') == len(results.singles) == 2  # prep, collect
    best = results.best
    assert best is not None and f"trial {best.index}" in text


def test_user_strings_are_escaped(results: RunResults, tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    trials = (dataclasses.replace(results.trials[0], overrides=(f"name={evil}",)), *results.trials[1:])
    doctored = dataclasses.replace(results, experiment=evil, run_id=f"run{evil}", trials=trials)
    text = report.write(doctored, tmp_path / "r.html").read_text()
    assert evil not in text
    assert "name=&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_gpu_use_is_drawn_per_task_then_per_stage(results: RunResults, tmp_path: Path) -> None:
    t0 = results.now - 100

    def tasks(n: int) -> tuple[TaskGpu, ...]:
        line = ([t0 + s for s in range(10)], [50.0] * 10, [1000.0] * 10)
        return tuple(TaskGpu("train.0", "train", i, f"2_{i}", 1, tmp_path / "gpu.csv", None, line) for i in range(n))

    for n, what in ((2, "mean utilisation over each task&#x27;s GPUs"), (25, "25 tasks: mean utilisation per stage")):
        gpu = RunGpu(results.run_id, tasks(n), {}, gpustats.combine([]))
        text = report.write(dataclasses.replace(results, gpu=gpu), tmp_path / f"gpu{n}.html").read_text()
        assert 'id="gpu-util"' in text and what in text
    text = report.write(results, tmp_path / "none.html").read_text()
    assert "no GPU samples: no stage asks for GPUs" in text and 'id="gpu-util"' not in text


def test_a_large_timeline_is_drawn_with_webgl(
    results: RunResults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "GANTT_BARS_MAX", 3)
    text = report.write(results, tmp_path / "gl.html").read_text()
    assert '"type":"scattergl"' in text and "drawn as WebGL lines" in text
    assert '"type":"bar"' not in text


def test_terminal_gantt_of_the_run(results: RunResults) -> None:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(gantt.terminal(results, width=100, limit=40))
    text = console.export_text()
    lines = text.splitlines()
    for label in ("prep", "train[0]", "train[3]", "eval[0]", "collect"):
        assert any(line.startswith(label) for line in lines), text
    ran = [line for line in lines if gantt.BAR in line and line[0] not in (gantt.BAR, gantt.WAIT)]  # not the legend
    assert len(ran) == len({s.row for s in gantt.segments(results) if s.kind == gantt.RUNNING})
    assert all(len(line) <= 100 for line in lines)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(gantt.terminal(results, width=80, limit=3))
    assert f"{len(results.tasks) - 3} more tasks not shown" in console.export_text()


@pytest.fixture
def served(page: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    code = "import sys; from pathlib import Path; from slurmflow.results import report; report.serve(Path(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(page)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # the server prints its address once it listens
        assert ready, "serve printed no address within 30 s"
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, line
        yield proc, url.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_serve_answers_with_the_report_until_interrupted(served: tuple[subprocess.Popen[str], str], page: Path) -> None:
    proc, url = served
    with urllib.request.urlopen(url, timeout=10) as got:  # noqa: S310 (a local http URL the test made)
        assert got.read() == page.read_bytes()
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while proc.poll() is None:
        assert time.monotonic() < deadline, "serve did not stop on Ctrl-C"
        time.sleep(0.02)
    assert proc.returncode == 0
