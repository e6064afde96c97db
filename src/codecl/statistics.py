"""Uncertainty for every reported number: t-intervals over seeds, paired bootstrap between methods."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float | None  # None with a single value: no interval exists
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s / sqrt(n), with s the sample standard deviation (Student 1908)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, None, 1)
    deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * deviation / math.sqrt(n), n)


def paired_bootstrap_p(
    score_a: Callable[[list[list[int]]], float],
    score_b: Callable[[list[list[int]]], float],
    group_sizes: Sequence[int],
    resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Two-sided p-value for 'A and B score the same' (Koehn 2004, paired bootstrap resampling).

    Each resample draws, for every group (a task's test set), as many example indices as the group
    has, with replacement and the same for both systems, and recomputes both scores on them.
    p = 2 · min(P(delta <= 0), P(delta >= 0)), capped at 1, with delta = score_a - score_b over the
    resamples: identical systems give p = 1.
    """
    rng = random.Random(seed)
    not_above = not_below = 0
    for _ in range(resamples):
        indices = [[rng.randrange(size) for _ in range(size)] for size in group_sizes]
        delta = score_a(indices) - score_b(indices)
        not_above += delta <= 0
        not_below += delta >= 0
    return min(1.0, 2 * min(not_above, not_below) / resamples)
