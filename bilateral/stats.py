"""The statistics of comparing two arms: over seeds (a t-test, its interval, the smallest effect it
could detect, an equivalence test) and over test images (a bootstrap), and Holm over a family.

Which library computes what: scipy.stats the t-tests and their intervals (`ttest_rel`, Welch's
`ttest_ind`) and the bootstrap (`bootstrap`, percentile); statsmodels the equivalence tests
(`ttost_paired`, `ttost_ind`: two one-sided tests, TOST), the power analysis (`TTestPower`,
`TTestIndPower`) and Holm (`multipletests`). Nothing here is hand-written statistics; this module
only chooses, aligns and words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

ALPHA = 0.05  # every test and interval (95%)
POWER = 0.8  # of the minimum detectable effect
RESAMPLES = 2000  # bootstrap resamples


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b across seeds. NaN where there is no test (fewer than 2 values an arm, or
    differences without spread)."""

    test: str  # "paired t" or "Welch t"
    n: int  # pairs (paired) or the smaller arm's seeds (Welch)
    mean: float
    low: float  # 95% interval of the mean difference
    high: float
    se: float  # standard error of the mean difference
    df: float  # of the t distribution (n - 1 paired; Welch-Satterthwaite otherwise)
    p: float  # two-sided, H0: no difference
    mde: float  # the smallest |difference| the test detects with POWER at ALPHA
    tost_p: float  # equivalence within ±margin (TOST); NaN without a margin


def difference(a: np.ndarray, b: np.ndarray, paired: bool, margin: float | None = None) -> Difference:
    """a - b: a paired t-test (a[i] and b[i] are one seed's two arms) or Welch's (unequal variances);
    margin in the units of a and b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        return _paired(a, b, margin)
    return _welch(a, b, margin)


def _paired(a: np.ndarray, b: np.ndarray, margin: float | None) -> Difference:
    diff = a - b
    n, mean = len(diff), float(diff.mean()) if len(diff) else math.nan
    if n < 2 or np.allclose(diff, diff[0]):
        return Difference("paired t", n, mean, mean, mean, 0.0 if n else math.nan, n - 1, *[math.nan] * 3)
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(1 - ALPHA)
    sd = float(diff.std(ddof=1))
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA, power=POWER)
    tost = ttost_paired(a, b, -margin, margin)[0] if margin else math.nan
    return Difference(
        "paired t", n, mean, ci.low, ci.high, sd / math.sqrt(n), n - 1, test.pvalue, effect * sd, tost
    )


def _welch(a: np.ndarray, b: np.ndarray, margin: float | None) -> Difference:
    n, mean = min(len(a), len(b)), float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    va, vb = (a.var(ddof=1) if len(a) > 1 else math.nan), (b.var(ddof=1) if len(b) > 1 else math.nan)
    if n < 2 or va + vb == 0:
        se = 0.0 if n >= 2 else math.nan
        return Difference("Welch t", n, mean, mean, mean, se, len(a) + len(b) - 2, *[math.nan] * 3)
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(1 - ALPHA)
    effect = TTestIndPower().solve_power(
        effect_size=None, nobs1=len(a), ratio=len(b) / len(a), alpha=ALPHA, power=POWER
    )
    tost = ttost_ind(a, b, -margin, margin, usevar="unequal")[0] if margin else math.nan
    se = math.sqrt(va / len(a) + vb / len(b))
    pooled_sd = math.sqrt((va + vb) / 2)
    return Difference("Welch t", n, mean, ci.low, ci.high, se, test.df, test.pvalue, effect * pooled_sd, tost)


def verdict(d: Difference, p: float, tost_p: float, margin: float | None, unit: str = "") -> str:
    """In words, at ALPHA: "higher" or "lower" when the difference is significant (p, Holm-adjusted
    for a primary contrast), "equivalent within ±m" when TOST says so, otherwise "inconclusive"."""
    if not math.isnan(p) and p < ALPHA:
        return "higher" if d.mean > 0 else "lower"
    if margin and not math.isnan(tost_p) and tost_p < ALPHA:
        return f"equivalent within ±{margin:g}{unit}"
    return "inconclusive"


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN: no test, left out of the family)."""
    tested = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    adjusted = [math.nan] * len(pvalues)
    if tested:
        corrected = multipletests([pvalues[i] for i in tested], alpha=ALPHA, method="holm")[1]
        for i, p in zip(tested, corrected, strict=True):
            adjusted[i] = float(p)
    return adjusted


@dataclass(frozen=True)
class ImageBootstrap:
    low: float  # 95% percentile interval of the mean over images
    high: float
    se: float  # the bootstrap's standard error


def image_bootstrap(per_image: np.ndarray, seed: int = 0) -> ImageBootstrap:
    """Resample test images: per_image[i] is image i's difference between the arms (say, the mean
    over one arm's seeds of its correctness minus the other's), so one resample serves both arms and
    every seed alike."""
    per_image = np.asarray(per_image, float)
    result = stats.bootstrap(
        (per_image,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=1 - ALPHA,
        method="percentile",
        vectorized=True,
        batch=100,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return ImageBootstrap(float(ci.low), float(ci.high), float(result.standard_error))


def seeds_and_images(d: Difference, images: ImageBootstrap) -> tuple[float, float]:
    """95% interval of the difference with both sources of noise: the seeds' (the t-test's standard
    error) and the test set's (the image bootstrap's), independent, so their variances add; the t
    quantile keeps the seeds' degrees of freedom."""
    if math.isnan(d.se) or math.isnan(d.df):
        return math.nan, math.nan
    half = stats.t.ppf(1 - ALPHA / 2, d.df) * math.hypot(d.se, images.se)
    return d.mean - half, d.mean + half
