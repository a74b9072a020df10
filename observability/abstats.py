"""The statistics behind an A/B verdict: is the variant's difference from the control group real?

Pure Python (the standard library's NormalDist, and Student's t from the regularized incomplete beta
function), fed with per-group summaries the database computes (count, mean, sample variance; count and
successes), never with the rows themselves:
- means (latency, cost per call, a numeric score): Welch's t-test, which does not assume equal variances,
  with the Welch-Satterthwaite degrees of freedom and a 95 % interval for the difference;
- rates (errors, a boolean score's share of positive): the two-proportion z-test (pooled standard error
  for the test, unpooled for the interval);
- the sample size per group that would detect the observed difference at 5 % significance with 80 %
  power, and how many more calls that is.
Checked against scipy on fixed samples (tests/observability/test_abstats.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

ALPHA = 0.05
POWER = 0.80
_NORMAL = NormalDist()
_Z_ALPHA = _NORMAL.inv_cdf(1 - ALPHA / 2)
_Z_POWER = _NORMAL.inv_cdf(POWER)


@dataclass(frozen=True, slots=True)
class Summary:
    """One group's values of one metric: how many, their mean and sample variance (ddof 1)."""

    n: int
    mean: float
    variance: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """The variant against control: the difference (variant - control), its 95 % interval, the test's
    p-value, and the sample size per group the observed difference needs (None: cannot tell)."""

    test: str  # "welch" | "two-proportion"
    difference: float
    low: float
    high: float
    p_value: float
    needed_per_group: int | None

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if math.isinf(df):
        return 2 * _NORMAL.cdf(-abs(t))
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (p > 0.5), by bisection on the two-sided tail."""
    if math.isinf(df):
        return _NORMAL.inv_cdf(p)
    tail = 2 * (1 - p)
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if t_two_sided_p(mid, df) > tail:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def mean_interval(s: Summary) -> tuple[float, float] | None:
    """The 95 % interval of one group's mean (Student's t); None with fewer than two values."""
    if s.n < 2:
        return None
    half = t_quantile(1 - ALPHA / 2, s.n - 1) * math.sqrt(s.variance / s.n)
    return s.mean - half, s.mean + half


def welch(control: Summary, variant: Summary) -> Comparison | None:
    """Welch's t-test of variant - control; None with fewer than two values in a group."""
    if control.n < 2 or variant.n < 2:
        return None
    va, vb = control.variance / control.n, variant.variance / variant.n
    difference = variant.mean - control.mean
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Every value the same in both groups: the difference is exact.
        return Comparison("welch", difference, difference, difference, 1.0 if difference == 0 else 0.0, None)
    df = (va + vb) ** 2 / (va * va / (control.n - 1) + vb * vb / (variant.n - 1))
    p = t_two_sided_p(difference / se, df)
    half = t_quantile(1 - ALPHA / 2, df) * se
    needed = None
    if difference != 0.0:
        pooled = (control.variance + variant.variance) / 2
        needed = math.ceil(2 * (_Z_ALPHA + _Z_POWER) ** 2 * pooled / difference**2)
    return Comparison("welch", difference, difference - half, difference + half, p, needed)


def two_proportions(control_hits: int, control_n: int, variant_hits: int, variant_n: int) -> Comparison | None:
    """The two-proportion z-test of the variant's rate - the control's; None when a group is empty."""
    if control_n < 1 or variant_n < 1:
        return None
    p1, p2 = control_hits / control_n, variant_hits / variant_n
    difference = p2 - p1
    pooled = (control_hits + variant_hits) / (control_n + variant_n)
    se_test = math.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / variant_n))
    p = 1.0 if se_test == 0.0 else 2 * _NORMAL.cdf(-abs(difference) / se_test)
    se = math.sqrt(p1 * (1 - p1) / control_n + p2 * (1 - p2) / variant_n)
    needed = None
    if difference != 0.0:
        mean = (p1 + p2) / 2
        root = _Z_ALPHA * math.sqrt(2 * mean * (1 - mean)) + _Z_POWER * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        needed = math.ceil(root**2 / difference**2)
    return Comparison("two-proportion", difference, difference - _Z_ALPHA * se, difference + _Z_ALPHA * se, p, needed)


def still_needed(comparison: Comparison | None, control_n: int, variant_n: int) -> int | None:
    """More calls per group until the observed difference could be told apart (0: enough already)."""
    if comparison is None or comparison.needed_per_group is None:
        return None
    return max(0, comparison.needed_per_group - min(control_n, variant_n))
