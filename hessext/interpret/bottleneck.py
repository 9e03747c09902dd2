"""Reading a bottleneck: which candidate quantity does one neuron carry? (docs/wetzel-ising.md)

If a network decides through one number Q(S) and Q carries a physical quantity X(S), then
Q = f(X) with f bijective, hence monotone: a monotone fit of Q against X explains all of Q's
variance (R² → 1), and one against another quantity only what the two share. The fit here is
isotonic regression (scipy.optimize.isotonic_regression, increasing or decreasing, whichever
fits), scored out of sample: fitted on every other point, R² measured on the rest (and the
other way round), so the step function cannot score its own noise. Quantities that move together
across the data (|m| and the energy of Ising configurations across temperatures) are told
apart within groups (one temperature): the pooled share of each group's variance of Q that a
straight line in X explains there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

__all__ = ["MonotoneFit", "BottleneckReading", "r2_score", "monotone_fit", "read_bottleneck"]


def r2_score(y, y_hat) -> float:
    """Coefficient of determination 1 − Σ(y − ŷ)² / Σ(y − ȳ)² (NaN for constant y)."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    ss_tot = float(np.square(y - y.mean()).sum())
    return float("nan") if ss_tot == 0.0 else 1.0 - float(np.square(y - y_hat).sum()) / ss_tot


@dataclass
class MonotoneFit:
    """Q ≈ f(x) with f monotone (``increasing`` or not): f is the piecewise-linear interpolant
    through (``knots_x``, ``knots_q``), the isotonic fit on all points; ``r2`` is out of sample
    (see the module docstring)."""

    name: str
    increasing: bool
    r2: float
    knots_x: np.ndarray
    knots_q: np.ndarray

    def __call__(self, x) -> np.ndarray:
        return np.interp(np.asarray(x, dtype=np.float64), self.knots_x, self.knots_q)


def _isotonic(x: np.ndarray, q: np.ndarray, increasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Knots (distinct sorted x, fitted q) of the isotonic regression of q on x."""
    order = np.argsort(x, kind="stable")
    xs, qs = x[order], q[order]
    ux, start, counts = np.unique(xs, return_index=True, return_counts=True)
    means = np.add.reduceat(qs, start) / counts  # ties: one knot at their mean, weighted
    fit = isotonic_regression(means, weights=counts.astype(np.float64), increasing=increasing).x
    return ux, fit


def monotone_fit(q, x, *, name: str = "x") -> MonotoneFit:
    """The monotone map Q ≈ f(x) of a bottleneck q [n] on a candidate quantity x [n] (n >= 4)."""
    q, x = np.asarray(q, dtype=np.float64).ravel(), np.asarray(x, dtype=np.float64).ravel()
    if q.shape != x.shape or q.size < 4:
        raise ValueError(f"monotone_fit: q and x must be [n] with n >= 4, got {q.shape} and {x.shape}")
    if not (np.isfinite(q).all() and np.isfinite(x).all()):
        raise ValueError("monotone_fit: q and x must be finite")
    halves = (np.arange(q.size) % 2 == 0, np.arange(q.size) % 2 == 1)
    best = None
    for increasing in (True, False):
        res, tot = 0.0, 0.0
        for fit_on, score_on in (halves, halves[::-1]):
            kx, kq = _isotonic(x[fit_on], q[fit_on], increasing)
            pred = np.interp(x[score_on], kx, kq)
            res += float(np.square(q[score_on] - pred).sum())
            tot += float(np.square(q[score_on] - q[score_on].mean()).sum())
        r2 = float("nan") if tot == 0.0 else 1.0 - res / tot
        if best is None or r2 > best[1]:
            best = (increasing, r2)
    assert best is not None
    kx, kq = _isotonic(x, q, best[0])
    return MonotoneFit(name, best[0], best[1], kx, kq)


def _within_groups_r2(q: np.ndarray, x: np.ndarray, groups: np.ndarray) -> float:
    """Pooled share of the within-group variance of q that a per-group straight line in x
    explains: Σ_g SS_g r_g² / Σ_g SS_g."""
    explained, total = 0.0, 0.0
    for g in np.unique(groups):
        m = groups == g
        if m.sum() < 3:
            continue
        qg, xg = q[m] - q[m].mean(), x[m] - x[m].mean()
        ss_q, ss_x = float(qg @ qg), float(xg @ xg)
        total += ss_q
        if ss_q > 0 and ss_x > 0:
            explained += float(qg @ xg) ** 2 / ss_x
    return float("nan") if total == 0.0 else explained / total


@dataclass
class BottleneckReading:
    """Which candidate a bottleneck carries: the monotone ``fits`` per candidate, their
    out-of-sample R² (``r2``), the within-group R² (``r2_within``, when groups were given),
    and the ``quantity`` with the highest R² (the within-group one when groups were given)."""

    quantity: str
    r2: dict[str, float]
    r2_within: dict[str, float] | None
    fits: dict[str, MonotoneFit]


def read_bottleneck(q, candidates: dict, *, groups=None) -> BottleneckReading:
    """Fit a bottleneck's values q [n] against every candidate quantity ({name: [n]}) and name
    the one it carries. groups [n] (e.g. temperatures) adds the within-group comparison, which
    then decides."""
    if not candidates:
        raise ValueError("read_bottleneck: no candidate quantities")
    q = np.asarray(q, dtype=np.float64).ravel()
    fits = {name: monotone_fit(q, values, name=name) for name, values in candidates.items()}
    r2 = {name: f.r2 for name, f in fits.items()}
    r2_within = None
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.shape != q.shape:
            raise ValueError(f"read_bottleneck: groups must be [n] = [{q.size}], got {groups.shape}")
        r2_within = {
            name: _within_groups_r2(q, np.asarray(values, dtype=np.float64).ravel(), groups)
            for name, values in candidates.items()
        }
    decide = r2_within if r2_within is not None else r2
    quantity = max(decide, key=lambda k: -np.inf if np.isnan(decide[k]) else decide[k])
    return BottleneckReading(quantity, r2, r2_within, fits)
