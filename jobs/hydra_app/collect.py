"""After every evaluation: one table of the trials, best first (results.json in the run directory)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run_dir: str) -> int:
    rows = []
    for trial in (Path(run_dir) / "trials").iterdir():
        score = trial / "eval.json"
        if score.exists():
            rows.append({"trial": int(trial.name), **json.loads(score.read_text())})
    rows.sort(key=lambda r: -r["accuracy"])
    (Path(run_dir) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(f"trial {r['trial']:>3}  accuracy {r['accuracy']:.4f}  {' '.join(r['overrides'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
