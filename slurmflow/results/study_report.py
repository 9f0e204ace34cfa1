"""The report's "Search" section: a `search:` run's Optuna study, drawn from its summary.

The best trial(s) in a few lines, then one optimisation-history figure per objective (each
completed trial's value in the order results arrived, and the best so far as a step line) and
one parameter-importance bar chart per objective. Figures are built as report.py builds its own:
plain lists in a handful of traces, drawn by the page's `sfFigure` with the plotly.js the page
inlines once, so the section adds no script source and needs no network. Every name that comes
from the experiment (objectives, parameters, their values) is escaped: plotly reads HTML in
labels and hover text.
"""

from __future__ import annotations

from typing import Any

from slurmflow.results.report_page import NA, esc, figure, note
from slurmflow.results.study_view import BestTrial, StudySummary, number, study_line, trial_name

HISTORY_SVG_MAX = 2000  # points drawn as SVG markers up to this; WebGL past it (SVG crawls, as the Gantt does)
FRONT_ROWS_MAX = 100  # Pareto-front trials listed in the table
BEST_COLOUR = "#d62728"
VALUE_COLOUR = "#1f77b4"


def content(study: StudySummary | str) -> str:
    """The section's HTML; `study` is the summary, or why a search run's study cannot be read."""
    if isinstance(study, str):
        return note(f"the study cannot be shown: {esc(study)}")
    parts = [note(esc(study_line(study, label=f"study {study.study_name}"))), _best(study)]
    parts.append(_history(study))
    parts.append(_importance(study))
    return "".join(parts)


def _params(b: BestTrial) -> str:
    return f"<code>{esc(' '.join(f'{k}={v}' for k, v in b.params.items()) or NA)}</code>"


def _best(s: StudySummary) -> str:
    """The best trial and its parameters; the Pareto front as a table with several objectives."""
    if not s.best:
        return note("no trial has completed yet")
    if not s.multi:
        b = s.best[0]
        value = f"{esc(s.objectives[0])} ({esc(s.directions[0])}) = {number(b.values[0])}"
        facts = [
            ("best trial", f"{esc(trial_name(b))} (Optuna #{b.number})"),
            ("value", value),
            ("parameters", _params(b)),
        ]
        rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        return f'<dl class="facts" id="study-best">{rows}</dl>\n'
    shown = s.best[:FRONT_ROWS_MAX]
    head = ["trial", "Optuna #"] + [f"{esc(n)} ({esc(d)})" for n, d in zip(s.objectives, s.directions, strict=True)]
    head.append("parameters")
    body = []
    for b in shown:
        cells = [NA if b.trial is None else str(b.trial), str(b.number), *(number(v) for v in b.values)]
        row = "".join(f"<td>{c}</td>" for c in cells) + f"<td>{_params(b)}</td>"
        body.append(f'<tr data-study-trial="{b.number}">{row}</tr>')
    remark = f"Pareto front: {len(s.best)} trials no other completed trial beats on every objective"
    if len(s.best) > len(shown):
        remark += f"; the first {len(shown)} by {esc(s.objectives[0])}"
    return (
        note(remark)
        + '<table id="study-best">\n<thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>\n"
    )


def _history(s: StudySummary) -> str:
    """Per objective: each completed trial's value by completion order, and the best so far."""
    if not s.history:
        return ""
    n = len(s.history)
    gl = n > HISTORY_SVG_MAX
    x = list(range(1, n + 1))
    # Hover names the slurmflow trial (what `logs`, `results` and the table call it) and Optuna's number.
    custom = [[NA if h.trial is None else h.trial, h.number] for h in s.history]
    parts = []
    for i, (name, direction) in enumerate(zip(s.objectives, s.directions, strict=True)):
        label = esc(name)
        data: list[dict[str, Any]] = [
            {
                "type": "scattergl" if gl else "scatter",
                "mode": "markers",
                "name": "trial value",
                "x": x,
                "y": [h.values[i] for h in s.history],
                "customdata": custom,
                "marker": {"color": VALUE_COLOUR, "size": 5 if gl else 7, "opacity": 0.7},
                "hovertemplate": f"trial %{{customdata[0]}} (Optuna #%{{customdata[1]}})<br>{label} %{{y}}"
                "<extra></extra>",
            },
            {
                "type": "scattergl" if gl else "scatter",
                "mode": "lines",
                "name": "best so far",
                "x": x,
                "y": [h.best[i] for h in s.history],
                "line": {"color": BEST_COLOUR, "width": 2, "shape": "hv"},
                "hoverinfo": "skip",
            },
        ]
        layout = {
            "title": {"text": f"{label} ({esc(direction)})"},
            "height": 360,
            "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
            "xaxis": {"title": {"text": "completed trials, in the order they completed"}},
            "yaxis": {"title": {"text": label}},
            "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
            "hovermode": "closest",
        }
        parts.append(figure(f"study-history-{i}", data, layout))
    remark = f"optimisation history: {n} completed trials; pruned and failed trials have no value"
    return note(remark) + '<div class="curves">\n' + "".join(parts) + "</div>\n"


def _importance(s: StudySummary) -> str:
    """Per objective: the parameters' importance as bars, the most important at the top."""
    if s.importances is None:
        return note(f"parameter importance: {esc(s.importance_note or 'not computed')}")
    parts = []
    for i, (name, found) in enumerate(zip(s.objectives, s.importances, strict=False)):
        names = [esc(p) for p in found]
        data = [
            {
                "type": "bar",
                "orientation": "h",
                "name": "importance",
                "x": [round(v, 4) for v in found.values()],
                "y": names,
                "marker": {"color": VALUE_COLOUR},
                "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
            }
        ]
        layout = {
            "title": {"text": f"importance for {esc(name)}"},
            "height": 80 + 26 * max(len(names), 2),
            "margin": {"l": 10, "r": 10, "t": 40, "b": 40},
            "xaxis": {"title": {"text": "share of importance"}, "rangemode": "tozero"},
            "yaxis": {"automargin": True, "autorange": "reversed", "type": "category"},
            "showlegend": False,
        }
        parts.append(figure(f"study-importance-{i}", data, layout))
    remark = "parameter importance: Optuna's get_param_importances (its default evaluator), shares summing to 1"
    return note(esc(remark)) + '<div class="curves">\n' + "".join(parts) + "</div>\n"
