"""Runs only when some training task failed (after_not_ok): list the trials without a result."""

from __future__ import annotations

from common import run_dir


def main() -> None:
    missing = sorted(t.name for t in (run_dir() / "trials").iterdir() if not (t / "metrics.json").exists())
    note = run_dir() / "FAILED_TRIALS.txt"
    note.write_text("\n".join(missing) + "\n")
    print(f"{len(missing)} trial(s) failed to train: {', '.join(missing) or 'none found'} (see {note})")


if __name__ == "__main__":
    main()
