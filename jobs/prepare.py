"""Make the data set: two interleaved noisy half-moons in 2-D, split into train and test."""

from __future__ import annotations

import argparse
import math
import random

from common import dataset_path, write_json


def moons(n: int, noise: float, rng: random.Random) -> list[tuple[float, float, int]]:
    points = []
    for i in range(n):
        label = i % 2
        t = rng.uniform(0, math.pi)
        x, y = (math.cos(t), math.sin(t)) if label == 0 else (1 - math.cos(t), 0.5 - math.sin(t))
        points.append((x + rng.gauss(0, noise * 0.2), y + rng.gauss(0, noise * 0.2), label))
    rng.shuffle(points)
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    points = moons(args.n, args.noise, random.Random(args.seed))
    cut = int(0.8 * len(points))
    write_json(dataset_path(), {"train": points[:cut], "test": points[cut:]})
    print(f"prepared {len(points)} points in {dataset_path()}")


if __name__ == "__main__":
    main()
