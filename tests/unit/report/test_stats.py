"""The statistics behind the report's intervals and ties (no scipy: checked against tables)."""
import math

import numpy as np
import pytest

from splitbench.report.stats import spread, t_quantile, t_sf2, tie_groups, welch_p


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_printed_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)


def test_welch_p_value_matches_a_worked_example():
    # t = 2, 5 degrees of freedom: two-sided p = 0.10194 (any t table / scipy.stats.t.sf(2, 5) * 2)
    assert t_sf2(2.0, 5) == pytest.approx(0.10194, abs=1e-4)
    # Welch on [1,2,3] vs [4,5,6.5]: t = -3.4125 with 3.806 degrees of freedom (Welch-Satterthwaite);
    # p checked against a direct numerical integration of Student's density
    df, t = 3.8059406, 3.4125007
    x = np.linspace(t, 1000, 400_001)
    pdf = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)
    assert welch_p([1, 2, 3], [4, 5, 6.5]) == pytest.approx(2 * np.trapezoid(pdf, x), abs=1e-4)


def test_spread_gives_a_t_interval_and_nothing_from_one_value():
    s = spread([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.ci_high - s.mean == pytest.approx(4.3027 / math.sqrt(3), abs=1e-3)
    one = spread([5.0])
    assert one.mean == 5.0 and math.isnan(one.ci_low) and math.isnan(one.std)
    assert spread([math.nan, 2.0]).n == 1


def test_noise_ties_as_often_as_alpha_says_and_a_real_difference_is_ranked_apart():
    """Three repeats each: two settings drawn from one distribution are split in about 5% of
    trials (the test's alpha), and a setting 40% slower is ranked apart almost always."""
    rng = np.random.default_rng(7)
    trials, split, apart = 1000, 0, 0
    for _ in range(trials):
        a, b, c = rng.normal(100, 5, 3), rng.normal(100, 5, 3), rng.normal(60, 5, 3)
        ranks = {name: r for name, r, _ in tie_groups({"a": list(a), "b": list(b), "c": list(c)}, True)}
        split += ranks["a"] != ranks["b"]
        apart += ranks["c"] > max(ranks["a"], ranks["b"])
    assert 0.025 < split / trials < 0.075
    assert apart / trials > 0.99


def test_exact_byte_counts_tie_only_when_equal():
    assert welch_p([10.0] * 3, [10.0] * 3) == 1.0 and welch_p([10.0] * 3, [11.0] * 3) == 0.0
    ranks = [r for _, r, _ in tie_groups({"x": [10.0] * 3, "y": [10.0] * 3, "z": [11.0] * 3}, False)]
    assert ranks == [1, 1, 3]


def test_median_interval_is_the_order_statistics_one():
    from splitbench.report.stats import median_ci

    xs = list(range(1, 21))  # n = 20: P(Binomial(20, 1/2) <= 5) = 0.021 <= 0.025 < P(<= 6) = 0.058
    assert median_ci(xs) == (10.5, 6, 15)  # the 6th and 15th values, as tabulated for n = 20
    assert median_ci([3, 1, 2]) == (2, 1, 3)  # too few values for 95%: the range
