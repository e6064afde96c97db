import math
import random

import pytest

from codecl.statistics import format_p, t_interval, two_level_bootstrap_p


def test_t_interval_by_hand():
    # values 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302653, half width = 4.302653 / sqrt(3) = 2.484138
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.half_width == pytest.approx(2.484138, abs=1e-6)


def test_one_value_has_no_interval():
    assert t_interval([5.0]).half_width is None


def mean_of(per_seed):
    """Score over resampled seeds and examples: the mean over drawn seeds of the mean over drawn examples."""
    def score(seeds, groups):
        return sum(sum(per_seed[s][i] for i in groups[0]) / len(groups[0]) for s in seeds) / len(seeds)
    return score


def p_value(a, b, **options):
    return two_level_bootstrap_p(mean_of(a), mean_of(b), len(a), len(b), [len(a[0])], **options)


def test_identical_systems_give_p_one():
    scores = [[random.Random(i).random() for i in range(200)]]
    assert p_value(scores, scores, resamples=300) == 1.0


def test_a_clearly_better_system_is_significant_either_way_round():
    rng = random.Random(0)
    worse = [[rng.gauss(0.4, 0.1) for _ in range(200)]]
    better = [[w + 0.05 + rng.gauss(0, 0.02) for w in worse[0]]]
    assert p_value(better, worse) < 0.05
    assert p_value(worse, better) < 0.05


def test_noise_alone_is_not_significant():
    rng = random.Random(1)
    a = [[rng.gauss(0.5, 0.1) for _ in range(200)]]
    b = [[x + rng.gauss(0, 0.1) for x in a[0]]]  # same mean, only noise
    assert p_value(a, b, seed=3) > 0.05
    assert not math.isnan(p_value(a, b))


def test_seed_variance_counts():
    """A's three seeds score 0, 3.3 and 0.3 on every example (mean 1.2), B's three score 1.0. Held fixed,
    the seeds make A better on every resample of examples (p at its floor). Resampled, A's mean is at or
    below B's exactly when no draw is the 3.3 seed: (2/3)^3 = 8/27 of the time, so p = 2 * 8/27 = 0.593."""
    a = [[0.0] * 50, [3.3] * 50, [0.3] * 50]
    b = [[1.0] * 50] * 3
    assert p_value(a, b) == pytest.approx(16 / 27, abs=0.06)
    # One seed each: only the examples vary, and the difference is certain.
    assert p_value(a[1:2], b[:1]) == 0.0


def test_p_below_the_resolution_is_never_printed_as_zero():
    assert format_p(0.0, 1000) == "< 0.001"
    assert format_p(0.0, 200) == "< 0.005"
    assert format_p(0.036, 1000) == "0.036"
    assert format_p(1.0, 1000) == "1.000"
