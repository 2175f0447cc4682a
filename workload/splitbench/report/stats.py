"""Spread over repeats and the test that decides whether two settings differ.

Student's t distribution is computed here (regularized incomplete beta by Lentz's continued
fraction, as in Numerical Recipes 6.4) so that the report needs no scipy; the tests check it
against tabulated quantiles. With 3 repeats, Welch's t-test is the usual choice: it does not
assume equal variances, and a bootstrap of 3 values has only 10 distinct resamples."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
TEST_NAME = "Welch's two-sided t-test, alpha 0.05"


def _betacf(a: float, b: float, x: float) -> float:
    tiny, h = 1e-300, 1.0
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):  # converges in a few dozen terms for the df used here
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees of freedom."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, for p in (0.5, 1), by bisection on the tail."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf2(mid, df) / 2 > 1 - p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class Spread:
    n: int
    mean: float
    std: float        # sample standard deviation (ddof 1); nan with one value
    ci_low: float     # 95% t interval of the mean; nan with one value
    ci_high: float


def spread(values) -> Spread:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if len(v) == 1:
        return Spread(1, mean, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    half = t_quantile(1 - ALPHA / 2, len(v) - 1) * std / math.sqrt(len(v))
    return Spread(len(v), mean, std, mean - half, mean + half)


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test for equal means; nan when either side has fewer
    than 2 values. Two exactly constant samples (deterministic byte counts): 1 if equal, else 0."""
    a = np.asarray([x for x in a if not math.isnan(x)], dtype=float)
    b = np.asarray([x for x in b if not math.isnan(x)], dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return 1.0 if diff == 0 else 0.0
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    return t_sf2(t, df)


def tie_groups(samples: dict[str, list[float]], higher_is_better: bool) -> list[tuple[str, int, float]]:
    """(name, rank, p vs the leader of its group), best first. Settings are ordered by mean; a
    setting opens a new rank only when the test tells it apart from the first setting of the
    current group (p < ALPHA); otherwise it shares that rank (a tie). Settings with fewer than
    2 values cannot be tested and each gets its own rank, with p nan."""
    means = {k: float(np.nanmean(v)) for k, v in samples.items() if any(not math.isnan(x) for x in v)}
    order = sorted(means, key=lambda k: -means[k] if higher_is_better else means[k])
    out, leader, rank = [], None, 0
    for i, name in enumerate(order):
        p = welch_p(samples[leader], samples[name]) if leader is not None else math.nan
        if leader is None or math.isnan(p) or p < ALPHA:
            leader, rank = name, i + 1
            out.append((name, rank, math.nan))
        else:
            out.append((name, rank, p))
    return out


def median_ci(values: list[float], conf: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the sample median and a distribution-free interval for the true
    median from order statistics (the number of values below it is Binomial(n, 1/2))."""
    xs = sorted(values)
    n = len(xs)
    med = statistics.median(xs)
    if n < 6:
        return med, xs[0], xs[-1]
    alpha, cdf, j = (1 - conf) / 2, 0.0, -1
    while True:  # j: the largest count with P(X <= j) <= alpha
        p = math.comb(n, j + 1) / 2**n
        if cdf + p > alpha:
            break
        cdf += p
        j += 1
    j = max(j, 0)
    return med, xs[j], xs[n - 1 - j]
