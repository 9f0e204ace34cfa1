"""Evaluate a trial's final checkpoint on the held-out split.

It writes eval.json and does not import slurmflow: the stage's `metrics_file: eval.json` makes
slurmflow fold its numbers into the trial's metrics when the task ends."""

from __future__ import annotations

from common import dataset_path, read_json, trial_dir, write_json
from train import loss_and_accuracy


def main() -> None:
    ckpt = read_json(trial_dir() / "checkpoint.json")
    loss, acc = loss_and_accuracy(ckpt["weights"], read_json(dataset_path())["test"])
    write_json(trial_dir() / "eval.json", {"test_loss": loss, "test_accuracy": acc, "epochs": ckpt["epoch"]})
    print(f"test loss {loss:.4f} accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
