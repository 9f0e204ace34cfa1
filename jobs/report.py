"""Collect every trial's metrics into results.csv and print the table, best first."""

from __future__ import annotations

import csv

from common import read_json, run_dir


def main() -> None:
    rows = []
    for trial in sorted((run_dir() / "trials").iterdir(), key=lambda p: (len(p.name), p.name)):  # by trial number
        metrics, evaluation = trial / "metrics.json", trial / "eval.json"
        if not metrics.exists():
            rows.append({"trial": trial.name, "status": "no result"})
            continue
        row = {"trial": trial.name, "status": "ok", **read_json(metrics)}
        if evaluation.exists():
            row.update(read_json(evaluation))
        rows.append(row)
    rows.sort(key=lambda r: -float(r.get("test_accuracy", -1)))
    fields = ["trial", "status", "lr", "seed", "epochs", "loss", "accuracy", "test_loss", "test_accuracy"]
    out = run_dir() / "results.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        lr, seed, acc = r.get("lr", "-"), r.get("seed", "-"), r.get("test_accuracy", "-")
        print(f"{r['trial']}  lr={lr}  seed={seed}  test_accuracy={acc}")
    print(f"{len(rows)} trial(s) -> {out}")


if __name__ == "__main__":
    main()
