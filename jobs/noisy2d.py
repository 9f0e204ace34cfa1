"""A fast stand-in for a training run, for `search:` experiments: a seeded, noisy 2-D objective.

The objective is the Branin function (three global minima of 0.397887 over x in [-5, 10],
y in [0, 15]) plus Gaussian noise. The noise is drawn from a generator seeded by the trial's
parameters and `--seed`, so a trial run twice (a requeue, the same point in another study) gets
the same value, and two drivers given the same seed see the same objective.

The job "trains" for `--steps` steps. At each step it logs an intermediate value that starts
well above the final value and converges to it. A bad trial stays worse than a good one at every
step, so a median or ASHA pruner can stop it early. After each step it sleeps `--step-sleep`
seconds, to stand in for real work, and asks `should_stop()`: once the search has pruned the
trial, it exits cleanly without a final value. It needs no GPU and no data.

  python jobs/noisy2d.py --x 3.14 --y 2.27 --noise 0.1 --steps 10 --step-sleep 1 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import time
from collections.abc import Callable
from typing import cast

import slurmflow
from slurmflow import log, summary

# The Branin function's global minimum value and the three points where it is reached.
BRANIN_MIN = 0.397887357729738
BRANIN_MINIMA = ((-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475))
# The first step's value is about 1.5 times the final value: the gap to the final value is
# START_GAP * (1 + |final|) and shrinks as the square of the share of training left. Scaling the
# gap with the value keeps the trials in the same order at every step, as a pruner expects.
START_GAP = 0.5


def branin(x: float, y: float) -> float:
    """The Branin(-Hoo) function with its usual constants; it is never below BRANIN_MIN."""
    b = 5.1 / (4 * math.pi**2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def trial_rng(x: float, y: float, seed: int) -> random.Random:
    """A generator that depends only on the point and the seed. It is hashed with SHA-256 from the
    floats' repr, which is exact, so every process gets the same one. Python's hash() would not do:
    it is salted for strings in each process."""
    digest = hashlib.sha256(f"{x!r}:{y!r}:{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def curve(x: float, y: float, *, noise: float, steps: int, seed: int) -> list[float]:
    """The values logged at steps 1..steps; the last one is the trial's final (noisy) value.

    The final value is the generator's first draw, so it does not depend on `steps`: a longer
    run (e.g. for pruning) is the same objective. Later draws add jitter that fades to nothing
    at the last step."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    rng = trial_rng(x, y, seed)
    final = branin(x, y) + noise * rng.gauss(0.0, 1.0)
    values = []
    for step in range(1, steps + 1):
        left = 1.0 - step / steps  # share of training still to come: 1 - 1/steps, ..., 0
        gap = START_GAP * (1.0 + abs(final)) * left * left
        values.append(final + gap + noise * left * rng.gauss(0.0, 1.0))
    return values


def train(
    x: float,
    y: float,
    *,
    noise: float,
    steps: int,
    step_sleep: float,
    seed: int,
    report: Callable[[int, float], None] = lambda _step, _value: None,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Run the steps: report each value, sleep, then ask `stop`. Returns the final value, or
    None if `stop` said yes before the last step. The bench's Hydra app calls this too, so both
    drivers run the same loop."""
    values = curve(x, y, noise=noise, steps=steps, seed=seed)
    for step, value in enumerate(values, start=1):
        report(step, value)
        if step_sleep > 0:
            sleep(step_sleep)
        if step < steps and stop():
            return None
    return values[-1]


def pruned_check() -> Callable[[], bool]:
    """slurmflow's `should_stop`, or one that always says no. A slurmflow without it still runs
    this job, to the end. It is looked up by name, so mypy passes with or without it."""
    found: object = getattr(slurmflow, "should_stop", None)
    if callable(found):
        return cast(Callable[[], bool], found)
    return lambda: False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--x", type=float, required=True, help="first coordinate, in [-5, 10]")
    ap.add_argument("--y", type=float, required=True, help="second coordinate, in [0, 15]")
    ap.add_argument("--noise", type=float, default=0.1, help="standard deviation of the Gaussian noise")
    ap.add_argument("--steps", type=int, default=10, help="training steps, one intermediate value each")
    ap.add_argument("--step-sleep", type=float, default=0.0, help="seconds of (pretend) work per step")
    ap.add_argument("--seed", "--noise-seed", dest="seed", type=int, default=0, help="seed of the noise")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be at least 1 (got {args.steps})")

    last = [0]

    def report(step: int, value: float) -> None:
        last[0] = step
        log(step=step, value=value)  # the curve a pruner reads

    final = train(
        args.x,
        args.y,
        noise=args.noise,
        steps=args.steps,
        step_sleep=args.step_sleep,
        seed=args.seed,
        report=report,
        stop=pruned_check(),
    )
    if final is None:
        print(f"x={args.x} y={args.y}: pruned after step {last[0]} of {args.steps}; stopping", flush=True)
        return
    summary(value=final, noiseless=branin(args.x, args.y))
    print(f"x={args.x} y={args.y}: value {final:.6f} (noiseless {branin(args.x, args.y):.6f})", flush=True)


if __name__ == "__main__":
    main()
