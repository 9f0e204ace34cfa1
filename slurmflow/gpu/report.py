"""GPU plots of a run: utilisation and memory over time per task, and the utilisation histogram
per stage, as PNG or as one self-contained HTML page (inline SVG and a summary table)."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from slurmflow.errors import UsageError
from slurmflow.gpu.usage import RunGpu

MAX_LINES = 200  # tasks drawn one line each; beyond this, a sample of them (the histogram has all)


def _figure(run: RunGpu) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib: pip install 'slurmflow[plot]'") from exc
    sampled = [t for t in run.tasks if t.timeline[0]]
    if not sampled:
        raise UsageError(f"run {run.run_id} has no GPU samples yet: nothing to plot")
    step = max(1, len(sampled) // MAX_LINES)
    shown = sampled[::step]
    t0 = min(t.timeline[0][0] for t in sampled)
    fig = plt.figure(figsize=(12, 7), constrained_layout=True)
    grid = fig.add_gridspec(2, 3)
    ax_util, ax_mem = fig.add_subplot(grid[0, :2]), fig.add_subplot(grid[1, :2])
    ax_hist = fig.add_subplot(grid[:, 2])
    alpha = 0.9 if len(shown) <= 12 else max(0.15, 6 / len(shown))
    for t in shown:
        times, util, mem = t.timeline
        minutes = [(x - t0) / 60 for x in times]
        label = f"{t.stage}[{t.trial}]" if t.trial is not None else t.stage
        ax_util.plot(minutes, util, linewidth=1, alpha=alpha, label=label)
        ax_mem.plot(minutes, [m / 1024 for m in mem], linewidth=1, alpha=alpha, label=label)
    ax_util.set_ylabel("GPU utilisation (%)")
    ax_util.set_ylim(-2, 102)
    ax_mem.set_ylabel("GPU memory used (GiB)")
    ax_mem.set_xlabel("minutes since the first sample")
    if len(shown) <= 12:
        ax_util.legend(loc="upper right", fontsize="small")
    for stage, summary in run.stages.items():
        values = sorted(summary.hist)
        ax_hist.hist(values, bins=range(0, 102, 5), weights=[summary.hist[v] for v in values], alpha=0.6, label=stage)
    ax_hist.set_xlabel("utilisation (%)")
    ax_hist.set_ylabel("GPU samples")
    ax_hist.legend(fontsize="small")
    c = run.campaign
    mean = "-" if c.util_mean is None else f"{c.util_mean:.0f}%"
    shown_note = f" ({len(shown)} of {len(sampled)} tasks drawn)" if step > 1 else ""
    fig.suptitle(
        f"{run.run_id}: mean utilisation {mean}, {c.gpu_hours_used:.2f} of {c.gpu_hours_allocated:.2f} "
        f"GPU-hours used{shown_note}"
    )
    return fig


def _html(run: RunGpu, svg: str) -> str:
    rows = []
    for stage, s in [*run.stages.items(), ("campaign", run.campaign)]:
        d = s.to_dict()
        cells = [stage, d["tasks"], d["util_mean"], d["util_median"], d["util_p95"], d["idle_fraction"]]
        cells += [d["peak_mem_mib"], d["gpu_hours_allocated"], d["gpu_hours_used"]]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = [
        "stage",
        "tasks",
        "mean %",
        "median %",
        "p95 %",
        "idle fraction",
        "peak MiB",
        "GPU-h allocated",
        "GPU-h used",
    ]
    events = "".join(
        "<li>" + html.escape(f"{e.get('task')}: {e.get('action')}: {e.get('why')}") + "</li>" for e in run.events
    )
    title = html.escape(f"GPU use of {run.run_id}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{title}</h1>{svg}<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>"
        + (f"<h2>Idle-GPU events</h2><ul>{events}</ul>" if events else "")
        + "</body></html>\n"
    )


def plot(run: RunGpu, out: Path) -> Path:
    """Write the plots to `out`: `.png`, or `.html` for a page to open in a browser."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise UsageError(f"--plot {out}: write a .png or .html file")
    fig = _figure(run)
    if suffix == ".png":
        fig.savefig(out, dpi=110)
    else:
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        svg = buf.getvalue()
        out.write_text(_html(run, svg[svg.index("<svg") :]))
    return out
