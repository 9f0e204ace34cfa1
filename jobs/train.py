"""Train a small classifier (logistic regression on polynomial features) with SGD.

Logs its loss and accuracy per epoch through slurmflow's metrics API (`slurmflow results`,
`report` and `track` read them). Writes a checkpoint after every epoch and resumes from it when
restarted (a requeue or a time limit), so an interrupted run ends with the same result as an
uninterrupted one: the RNG state is part of the checkpoint.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import time

from common import dataset_path, read_json, trial_dir, write_json

from slurmflow import log, summary


def features(x: float, y: float) -> list[float]:
    return [1.0, x, y, x * x, x * y, y * y, x**3, y**3]


def predict(w: list[float], f: list[float]) -> float:
    z = sum(a * b for a, b in zip(w, f, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def loss_and_accuracy(w: list[float], points: list[list[float]]) -> tuple[float, float]:
    loss = correct = 0.0
    for x, y, label in points:
        p = predict(w, features(x, y))
        loss -= math.log(p if label else 1 - p + 1e-12) if p > 0 else 30.0
        correct += (p > 0.5) == bool(label)
    return loss / len(points), correct / len(points)


# Exit status after saving on a checkpoint signal: the task wrapper requeues the task.
EXIT_CHECKPOINTED = 99
stop_requested: list[int] = []


def request_stop(signum: int, _frame: object) -> None:
    """Slurm's warning (--signal) or a cancel: finish the epoch, save, exit."""
    stop_requested.append(signum)


def main() -> None:
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, request_stop)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--l2", type=float, default=0.0)
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds to pause per epoch (to watch it run)")
    args = ap.parse_args()

    data = read_json(dataset_path())
    ckpt_path = trial_dir() / "checkpoint.json"
    rng = random.Random(args.seed)
    w = [rng.gauss(0, 0.1) for _ in range(8)]
    start, history = 0, []
    if ckpt_path.exists():
        ckpt = read_json(ckpt_path)
        w, start, history = ckpt["weights"], ckpt["epoch"], ckpt["history"]
        rng.setstate((ckpt["rng"][0], tuple(ckpt["rng"][1]), ckpt["rng"][2]))
        print(f"resumed from epoch {start}")
    train = data["train"]
    for epoch in range(start, args.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in order:
            x, y, label = train[i]
            f = features(x, y)
            err = predict(w, f) - label
            w = [wj - args.lr * (err * fj + args.l2 * wj) for wj, fj in zip(w, f, strict=True)]
        loss, acc = loss_and_accuracy(w, train)
        history.append({"epoch": epoch + 1, "loss": loss, "accuracy": acc})
        log(step=epoch + 1, loss=loss, accuracy=acc)  # a learning curve for `slurmflow report`
        state = rng.getstate()
        write_json(
            ckpt_path,
            {"weights": w, "epoch": epoch + 1, "history": history, "rng": [state[0], list(state[1]), state[2]]},
        )
        if args.sleep:
            time.sleep(args.sleep)
        if stop_requested and epoch + 1 < args.epochs:
            print(f"checkpoint saved at epoch {epoch + 1}; stopping on signal {stop_requested[0]}", flush=True)
            sys.exit(EXIT_CHECKPOINTED)
    summary(loss=history[-1]["loss"], accuracy=history[-1]["accuracy"])
    print(f"lr={args.lr} seed={args.seed}: train loss {history[-1]['loss']:.4f} accuracy {history[-1]['accuracy']:.3f}")


if __name__ == "__main__":
    main()
