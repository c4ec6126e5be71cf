"""The statistics of a contrast against hand-computed cases (bilateral/stats.py wraps scipy and
statsmodels; these check that it calls them as the report means)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bilateral.stats import Difference, ImageBootstrap, difference, image_bootstrap, seeds_and_images, verdict


def test_tost_against_a_hand_computed_case():
    """Paired differences -0.5, 0, 0.5 (points), margin 1: mean 0, sd 0.5, se 0.5/sqrt(3), so each
    one-sided t is 1/se = 2 sqrt(3) on 2 df, whose CDF has the closed form 1/2 + t / (2 sqrt(2 + t^2))."""
    a, b = np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.5, 0.5])
    t = 2 * math.sqrt(3)
    by_hand = 1 - (0.5 + t / (2 * math.sqrt(2 + t * t)))  # 0.03709
    d = difference(a, b, paired=True, margin=1.0)
    assert d.tost_p == pytest.approx(by_hand, rel=1e-9) and by_hand == pytest.approx(0.03709, abs=1e-5)
    assert d.mean == 0 and d.p == pytest.approx(1.0)
    # the 95% interval: mean +- t_{0.975,2} * se, t_{0.975,2} = 4.302653
    assert (d.low, d.high) == pytest.approx((-4.302653 * 0.5 / math.sqrt(3), 4.302653 * 0.5 / math.sqrt(3)))
    assert verdict(d, d.p, d.tost_p, 1.0) == "equivalent within ±1"
    assert verdict(d, d.p, d.tost_p, 0.5) == "equivalent within ±0.5"  # the margin names itself
    assert math.isnan(difference(a, b, paired=True).tost_p)  # no margin, no equivalence test


def test_welch_is_used_unpaired_and_matches_scipy():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0])
    d = difference(a, b, paired=False, margin=5.0)
    assert d.test == "Welch t" and d.p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert d.se == pytest.approx(math.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 3))
    assert 0 < d.tost_p < 0.05  # |-1.5| well inside ±5


def test_the_minimum_detectable_effect_has_80_percent_power():
    """At the reported effect, the paired t-test's power (noncentral t, by scipy) is 0.8."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5), rng.normal(0, 1, 5)
    d = difference(a, b, paired=True)
    sd = float(np.std(a - b, ddof=1))
    ncp = d.mde / sd * math.sqrt(5)
    crit = sps.t.ppf(0.975, 4)
    power = sps.nct.sf(crit, 4, ncp) + sps.nct.cdf(-crit, 4, ncp)
    assert power == pytest.approx(0.8, abs=1e-4)
    assert d.mde / sd == pytest.approx(1.682, abs=1e-3)  # the textbook d for n = 5, two-sided 5%


def test_bootstrap_against_the_binomial_standard_error_and_shrinking_with_the_test_set():
    """An arm right on 25% more images than the other: the bootstrap's standard error of the mean
    difference is sqrt(p (1 - p) / n) and its 95% interval about +-1.96 of it; 4x the images halve it."""
    small = np.r_[np.ones(100), np.zeros(300)]
    boot = image_bootstrap(small)
    se = math.sqrt(0.25 * 0.75 / 400)  # 0.02165
    assert boot.se == pytest.approx(se, rel=0.08)
    assert (boot.high - boot.low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert boot.low < 0.25 < boot.high
    large = image_bootstrap(np.tile(small, 4))
    assert (large.high - large.low) / (boot.high - boot.low) == pytest.approx(0.5, rel=0.12)


def test_seed_and_image_noise_add_in_variance():
    d = Difference("paired t", 5, 1.0, 0, 0, se=0.3, df=4, p=0.1, mde=1, tost_p=math.nan)
    low, high = seeds_and_images(d, ImageBootstrap(0, 0, se=0.4))
    assert (high - low) / 2 == pytest.approx(sps.t.ppf(0.975, 4) * 0.5)  # hypot(0.3, 0.4) = 0.5


def test_verdicts_in_words():
    up = difference(np.array([3.0, 3.2, 2.9, 3.1]), np.zeros(4), paired=True, margin=1.0)
    assert verdict(up, up.p, up.tost_p, 1.0) == "higher"
    down = difference(np.zeros(4), np.array([3.0, 3.2, 2.9, 3.1]), paired=True, margin=1.0)
    assert verdict(down, down.p, down.tost_p, 1.0) == "lower"
    noisy = difference(np.array([2.0, -1.5, 0.5, -2.0]), np.zeros(4), paired=True, margin=1.0)
    assert verdict(noisy, noisy.p, noisy.tost_p, 1.0) == "inconclusive"
    assert math.isnan(difference(np.array([1.0]), np.array([0.0]), paired=True).p)  # one pair: no test
