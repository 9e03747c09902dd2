"""Spearman with bootstrap intervals against scipy and brute force; SSIM against a direct
window-by-window evaluation of its definition."""

import math

import numpy as np
import pytest
from scipy import stats

from hessext.reporting.stats import gaussian_window, spearman, spearman_interval, ssim


def test_spearman_matches_scipy_with_ties_and_nans():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(4, 30))
        x = rng.integers(0, 5, n).astype(float)  # ties
        y = x + rng.normal(0, 2, n)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, np.inf, 7.0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr([1, 2, 5], [2, 1, 7]).statistic)
    assert math.isnan(spearman([1, 2], [3, 4])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_interval_is_the_percentile_bootstrap():
    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    c = spearman_interval(x, y, n_boot=500, seed=3)
    # the same resamples by hand, through scipy
    idx = np.random.default_rng(3).integers(0, 25, size=(500, 25))
    boot = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    lo, hi = np.quantile(boot[np.isfinite(boot)], [0.025, 0.975])
    assert (c.low, c.high) == pytest.approx((lo, hi), abs=1e-12)
    assert c.low < c.rho < c.high and c.n == 25
    assert c == spearman_interval(x, y, n_boot=500, seed=3)  # seeded
    assert math.isnan(spearman_interval([1, 2], [1, 2]).low)


def _ssim_by_windows(a, b, L=1.0):
    w = gaussian_window()
    k = w.shape[0]
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for i in range(a.shape[0] - k + 1):
        for j in range(a.shape[1] - k + 1):
            pa, pb = a[i : i + k, j : j + k], b[i : i + k, j : j + k]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_is_its_definition():
    rng = np.random.default_rng(2)
    a = rng.uniform(size=(14, 17))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(_ssim_by_windows(a, b), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-14)
    assert ssim(a, 1 - a) < 0
    w = gaussian_window()
    assert w.shape == (11, 11) and w.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="11"):
        ssim(a[:5], b[:5])
