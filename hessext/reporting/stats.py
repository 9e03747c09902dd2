"""Statistics the studies report: rank correlation with a bootstrap interval, and SSIM.

- ``spearman``: Spearman's ρ (Pearson correlation of average ranks, so ties are handled).
- ``spearman_interval``: ρ with a percentile-bootstrap interval over resampled pairs.
- ``ssim``: the structural similarity index of two maps (Wang, Bovik, Sheikh & Simoncelli,
  IEEE TIP 13, 600 (2004)), implemented from its definition: Gaussian window σ = 1.5 (11×11),
  K1 = 0.01, K2 = 0.03, population (not sample) moments, averaged over the positions where the
  window lies inside the image. This is scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False`` (which also averages over the interior
  only); scikit-image itself is not a dependency.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.stats import rankdata

__all__ = ["spearman", "spearman_interval", "Correlation", "ssim", "gaussian_window"]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a [B, n] with the same row of b (NaN if constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _paired(fn: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{fn}: x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def spearman(x, y) -> float:
    """Spearman's rank correlation of the finite pairs (x_i, y_i); NaN with fewer than 3 pairs
    or when either side is constant."""
    x, y = _paired("spearman", x, y)
    if x.size < 3:
        return math.nan
    return float(_pearson_rows(rankdata(x)[None], rankdata(y)[None])[0])


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Spearman's ρ of n pairs and its percentile-bootstrap interval [low, high] at ``level``."""

    rho: float
    low: float
    high: float
    n: int
    level: float = 0.95


def spearman_interval(x, y, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Correlation:
    """Spearman's ρ with a percentile-bootstrap interval: the finite pairs are resampled with
    replacement ``n_boot`` times (seeded), ρ recomputed on each resample (resamples where one
    side is constant are dropped) and the (1 ± level)/2 quantiles taken."""
    if not (isinstance(n_boot, int) and n_boot >= 10):
        raise ValueError(f"spearman_interval: n_boot must be an int >= 10, got {n_boot!r}")
    if not (0 < level < 1):
        raise ValueError(f"spearman_interval: level must be in (0, 1), got {level!r}")
    x, y = _paired("spearman_interval", x, y)
    n = x.size
    rho = spearman(x, y)
    if n < 3:
        return Correlation(rho, math.nan, math.nan, n, level)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = _pearson_rows(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Correlation(rho, math.nan, math.nan, n, level)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return Correlation(rho, float(low), float(high), n, level)


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """The normalised 2-D Gaussian window [2r+1, 2r+1] of SSIM (σ = 1.5, r = 5: 11×11)."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _window_means(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ_window w·img at every position where the window fits inside the image ('valid')."""
    k = w.shape[0]
    views = np.lib.stride_tricks.sliding_window_view(img, (k, k))  # [H-k+1, W-k+1, k, k]
    return np.einsum("ijkl,kl->ij", views, w)


def ssim(a, b, *, data_range: float = 1.0, sigma: float = 1.5, radius: int = 5) -> float:
    """Mean SSIM of two maps a, b [H, W] (H, W ≥ 2·radius + 1):

        SSIM(p) = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)),

    with μ, σ², σ_ab the Gaussian-weighted local means, variances and covariance around p,
    C1 = (0.01 L)², C2 = (0.03 L)², L = data_range (1 for maps of fractions), averaged over
    the positions p whose window lies inside both maps. 1 for identical maps."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    k = 2 * radius + 1
    if a.shape != b.shape or a.ndim != 2 or min(a.shape) < k:
        raise ValueError(
            f"ssim: a and b must be equal 2-D maps of at least {k}×{k}, got {a.shape} and {b.shape}"
        )
    if not (data_range > 0):
        raise ValueError(f"ssim: data_range must be > 0, got {data_range!r}")
    w = gaussian_window(sigma, radius)
    mu_a, mu_b = _window_means(a, w), _window_means(b, w)
    var_a = _window_means(a * a, w) - mu_a**2
    var_b = _window_means(b * b, w) - mu_b**2
    cov = _window_means(a * b, w) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
