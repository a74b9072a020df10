"""The A/B statistics (observability.abstats) against scipy on fixed samples: Welch's t-test, its
interval, the two-proportion z-test, a mean's t interval and the sample size the observed effect needs."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats as scipy_stats

from observability.abstats import (
    Summary,
    incomplete_beta,
    mean_interval,
    still_needed,
    t_quantile,
    two_proportions,
    welch,
)


def summary(values: list[float]) -> Summary:
    return Summary(len(values), statistics.fmean(values), statistics.variance(values))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_welch_agrees_with_scipy(seed):
    rnd = random.Random(seed)
    control = [rnd.gauss(3.4, 1.1) for _ in range(40 + seed * 13)]
    variant = [rnd.gauss(3.9, 1.9) for _ in range(25 + seed * 7)]
    ours = welch(summary(control), summary(variant))
    theirs = scipy_stats.ttest_ind(variant, control, equal_var=False)
    assert ours is not None and ours.test == "welch"
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-6)
    low, high = theirs.confidence_interval(0.95)
    assert (ours.low, ours.high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
    assert ours.difference == pytest.approx(statistics.fmean(variant) - statistics.fmean(control))


def test_a_mean_interval_and_t_quantiles_agree_with_scipy():
    values = [4.0, 5.0, 3.0, 5.0, 4.0, 2.0, 5.0, 4.0]
    low, high = mean_interval(summary(values))
    expected = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=statistics.fmean(values), scale=scipy_stats.sem(values)
    )
    assert (low, high) == (pytest.approx(expected[0], rel=1e-7), pytest.approx(expected[1], rel=1e-7))
    for df in (1, 2.5, 7, 30, 400):
        assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-7)
    for a, b, x in ((0.5, 0.5, 0.3), (3.0, 0.5, 0.9), (20.0, 0.5, 0.99), (2.0, 7.0, 0.2)):
        assert incomplete_beta(a, b, x) == pytest.approx(scipy_stats.beta.cdf(x, a, b), rel=1e-9)
    assert mean_interval(Summary(1, 3.0, 0.0)) is None


def test_two_proportions_agree_with_the_textbook_z_test():
    # 120 errors in 1,000 control calls against 90 in 1,050 variant calls.
    ours = two_proportions(120, 1000, 90, 1050)
    p1, p2 = 120 / 1000, 90 / 1050
    pooled = 210 / 2050
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 1050))
    assert ours is not None and ours.test == "two-proportion"
    assert ours.p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(z)), rel=1e-9)
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(p1 * (1 - p1) / 1000 + p2 * (1 - p2) / 1050)
    assert (ours.low, ours.high) == (pytest.approx(p2 - p1 - half), pytest.approx(p2 - p1 + half))
    assert ours.significant  # p ~ 0.011
    assert not two_proportions(12, 100, 9, 105).significant  # the same rates, a tenth of the calls


def test_the_sample_size_needed_matches_the_power_formula():
    # Means: n = 2 (z_.975 + z_.8)^2 sigma^2 / delta^2 with sigma^2 = 4 and delta = 0.5 -> 251.1 -> 252.
    comparison = welch(Summary(100, 10.0, 4.0), Summary(100, 10.5, 4.0))
    assert comparison is not None and comparison.needed_per_group == 252
    assert still_needed(comparison, 100, 120) == 152
    assert still_needed(comparison, 300, 260) == 0
    # Rates: 10 % against 12 % needs about 3,841 per group (the usual tables say 3,839-3,841).
    rates = two_proportions(100, 1000, 120, 1000)
    assert rates is not None and 3835 <= rates.needed_per_group <= 3845
    # No difference: nothing to detect.
    assert welch(Summary(5, 1.0, 0.0), Summary(5, 1.0, 0.0)).needed_per_group is None
