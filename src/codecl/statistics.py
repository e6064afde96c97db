"""Uncertainty for every reported number: t-intervals over seeds, a two-level bootstrap between methods."""

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


def two_level_bootstrap_p(
    score_a: Callable[[list[int], list[list[int]]], float],
    score_b: Callable[[list[int], list[list[int]]], float],
    seeds_a: int,
    seeds_b: int,
    group_sizes: Sequence[int],
    resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Two-sided p-value for 'A and B score the same', over both sources of variance: the training
    seed and the test examples (a two-level, or hierarchical, bootstrap; Koehn 2004 for the paired
    resampling of examples).

    Each resample draws, for each system, as many of its seeds as it has, with replacement and
    independently (a seed is a fresh training run, not a shared input); and, for every group (a
    task's test set), as many example indices as the group has, with replacement and the same for
    both systems, since both are scored on the same inputs. ``score_x(seed_indices, example_indices)``
    recomputes a system's score on them. p = 2 · min(P(delta <= 0), P(delta >= 0)), capped at 1, with
    delta = score_a - score_b over the resamples: identical systems give p = 1, and the smallest p
    that ``resamples`` can show above 0 is 2 / resamples (`format_p` prints 0 as "< 1/B").

    With one seed per system the seed level draws that seed every time, and only the test examples'
    variance is left: the p-value then says nothing about another training run.
    """
    rng = random.Random(seed)
    not_above = not_below = 0
    for _ in range(resamples):
        drawn_a = [rng.randrange(seeds_a) for _ in range(seeds_a)]
        drawn_b = [rng.randrange(seeds_b) for _ in range(seeds_b)]
        indices = [[rng.randrange(size) for _ in range(size)] for size in group_sizes]
        delta = score_a(drawn_a, indices) - score_b(drawn_b, indices)
        not_above += delta <= 0
        not_below += delta >= 0
    return min(1.0, 2 * min(not_above, not_below) / resamples)


def format_p(p_value: float, resamples: int) -> str:
    """A bootstrap p-value at the resolution its resamples give: below 1/B it is "< 1/B", never 0."""
    if p_value < 1 / resamples:
        return f"< {1 / resamples:g}"
    return f"{p_value:.3f}"
