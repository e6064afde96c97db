import math
import random

import pytest

from codecl.statistics import paired_bootstrap_p, t_interval


def test_t_interval_by_hand():
    # values 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302653, half width = 4.302653 / sqrt(3) = 2.484138
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.half_width == pytest.approx(2.484138, abs=1e-6)


def test_one_value_has_no_interval():
    assert t_interval([5.0]).half_width is None


def mean_of(values):
    return lambda groups: sum(values[i] for i in groups[0]) / len(groups[0])


def test_identical_systems_give_p_one():
    scores = [random.Random(i).random() for i in range(200)]
    assert paired_bootstrap_p(mean_of(scores), mean_of(scores), [200], resamples=300) == 1.0


def test_a_clearly_better_system_is_significant_either_way_round():
    rng = random.Random(0)
    worse = [rng.gauss(0.4, 0.1) for _ in range(200)]
    better = [w + 0.05 + rng.gauss(0, 0.02) for w in worse]
    assert paired_bootstrap_p(mean_of(better), mean_of(worse), [200]) < 0.05
    assert paired_bootstrap_p(mean_of(worse), mean_of(better), [200]) < 0.05


def test_noise_alone_is_not_significant():
    rng = random.Random(1)
    a = [rng.gauss(0.5, 0.1) for _ in range(200)]
    b = [x + rng.gauss(0, 0.1) for x in a]  # same mean, only noise
    assert paired_bootstrap_p(mean_of(a), mean_of(b), [200], seed=3) > 0.05
    assert not math.isnan(paired_bootstrap_p(mean_of(a), mean_of(b), [200]))
