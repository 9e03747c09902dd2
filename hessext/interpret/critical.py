"""Locating a phase transition from what a network outputs or carries (docs/wetzel-ising.md).

Three estimators of a critical point from curves measured on several system sizes L:

- :func:`crossing`: where a curve y(T) passes a level (a classifier's mean prediction through
  ½), or where two curves cross (linear interpolation between the grid points around the sign
  change, refined by a local quadratic fit of the difference).
- :func:`binder_cumulant` and :func:`binder_collapse`: the Binder cumulant U = 1 − ⟨z⁴⟩/(3⟨z²⟩²)
  of an order parameter z (e.g. an autoencoder's latent) is dimensionless, so near T_c it is a
  function of (T − T_c) L^{1/ν} alone; fitting U(T, L) = g((T − T_c) L^{1/ν}) with g a
  polynomial over every L at once gives T_c and ν (finite-size scaling, corrections ignored).
- :func:`extrapolate_inverse_size`: a size-dependent estimate T*(L) = T_c + a L^{-1/ν}, fitted
  by least squares (weighted when errors are given) and read at L → ∞.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "binder_cumulant",
    "crossing",
    "BinderCollapse",
    "binder_collapse",
    "Extrapolation",
    "extrapolate_inverse_size",
]


def binder_cumulant(z) -> float:
    """U = 1 − ⟨z⁴⟩ / (3 ⟨z²⟩²) of samples z [n] of an order parameter symmetric about 0
    (2/3 for a two-peaked ordered distribution, 0 for a Gaussian)."""
    z = np.asarray(z, dtype=np.float64)
    m2 = float(np.mean(z * z))
    if m2 == 0.0:
        return float("nan")
    return 1.0 - float(np.mean(z**4)) / (3.0 * m2 * m2)


def crossing(T, y, level=None, *, y2=None, direction: str = "down") -> float:
    """Where y(T) crosses ``level`` (or where y2(T) − y(T) changes sign, for two curves on the
    same grid T), along increasing T. direction 'down': the last crossing from above to below
    (a prediction falling through ½, a large system's Binder curve falling below a small
    one's); 'up' the reverse. NaN if there is none. T [K] sorted increasing."""
    T = np.asarray(T, dtype=np.float64)
    if (level is None) == (y2 is None):
        raise ValueError("crossing: give exactly one of level and y2")
    d = np.asarray(y2, dtype=np.float64) - np.asarray(y, dtype=np.float64) if y2 is not None else None
    if d is None:
        d = np.asarray(y, dtype=np.float64) - float(level)
    if direction not in ("down", "up"):
        raise ValueError(f"crossing: direction must be 'down' or 'up', got {direction!r}")
    if direction == "up":
        d = -d
    if T.shape != d.shape or T.ndim != 1 or not np.all(np.diff(T) > 0):
        raise ValueError("crossing: T must be 1-D, increasing, and match the curves")
    ks = np.nonzero((d[:-1] > 0) & (d[1:] <= 0))[0]
    if ks.size == 0:
        return float("nan")
    k = int(ks[-1])
    t = T[k] + (T[k + 1] - T[k]) * d[k] / (d[k] - d[k + 1])
    # refine with a quadratic through the four nearest points when it has a root between them
    near = np.argsort(np.abs(T - t))[:4]
    if near.size == 4:
        c = np.polyfit(T[near] - t, d[near], 2)
        roots = np.roots(c).real[np.isreal(np.roots(c))] + t
        roots = roots[(roots >= T[k]) & (roots <= T[k + 1])]
        if roots.size:
            t = float(roots[np.argmin(np.abs(roots - t))])
    return float(t)


@dataclass
class BinderCollapse:
    """The finite-size-scaling fit U(T, L) = g((T − T_c) L^{1/ν}), g a polynomial of
    ``degree``: T_c, ν, g's coefficients (highest power first), the points used (|x| <= x_max)
    and the fit's RMS residual."""

    tc: float
    nu: float
    coefficients: np.ndarray
    n_points: int
    rms: float


def binder_collapse(
    L, T, U, *, tc0: float, nu0: float = 1.0, degree: int = 3, x_max: float = 2.0, rounds: int = 4
) -> BinderCollapse:
    """Fit the Binder cumulants U [K] measured at sizes L [K] and temperatures T [K] to one
    scaling curve (module docstring), using the points with |x| = |T − T_c| L^{1/ν} <= x_max at
    the current estimate (re-selected over ``rounds`` rounds, starting from tc0, nu0)."""
    L, T, U = (np.asarray(a, dtype=np.float64).ravel() for a in (L, T, U))
    if not (L.shape == T.shape == U.shape) or L.size < degree + 3:
        raise ValueError(f"binder_collapse: need L, T, U of equal length >= {degree + 3}")
    p = np.r_[tc0, 1.0 / nu0, np.zeros(degree), np.nanmean(U)]
    used = np.ones_like(U, dtype=bool)
    for _ in range(rounds):
        used = np.abs((T - p[0]) * L ** p[1]) <= x_max
        used &= np.isfinite(U)
        if used.sum() < degree + 3:
            raise ValueError(f"binder_collapse: only {int(used.sum())} points with |x| <= {x_max}")
        Lu, Tu, Uu = L[used], T[used], U[used]

        def residual(q, Lu=Lu, Tu=Tu, Uu=Uu):
            return Uu - np.polyval(q[2:], (Tu - q[0]) * Lu ** q[1])

        p = least_squares(residual, p).x
    res = U[used] - np.polyval(p[2:], (T[used] - p[0]) * L[used] ** p[1])
    return BinderCollapse(
        float(p[0]), float(1.0 / p[1]), p[2:].copy(), int(used.sum()), float(np.sqrt(np.mean(res**2)))
    )


@dataclass
class Extrapolation:
    """T*(L) = tc + slope · L^{-1/ν}: the fitted limit, its standard error (from the fit's
    covariance; NaN with two sizes and no errors) and the slope."""

    tc: float
    tc_error: float
    slope: float


def extrapolate_inverse_size(L, t_star, errors=None, *, nu: float = 1.0) -> Extrapolation:
    """Least-squares fit of size-dependent estimates t_star [K] at sizes L [K] (K >= 2) to
    tc + slope · L^{-1/ν}; weighted by 1/errors² when given."""
    L, t = np.asarray(L, dtype=np.float64), np.asarray(t_star, dtype=np.float64)
    ok = np.isfinite(t)
    if ok.sum() < 2:
        return Extrapolation(float("nan"), float("nan"), float("nan"))
    A = np.stack([np.ones(ok.sum()), L[ok] ** (-1.0 / nu)], axis=1)
    w = (
        np.ones(ok.sum())
        if errors is None
        else 1.0 / np.maximum(np.asarray(errors, dtype=np.float64)[ok], 1e-12)
    )
    coef, *_ = np.linalg.lstsq(A * w[:, None], t[ok] * w, rcond=None)
    dof = int(ok.sum()) - 2
    if errors is not None:
        cov = np.linalg.inv((A * w[:, None] ** 2).T @ A)
    elif dof > 0:
        r = t[ok] - A @ coef
        cov = np.linalg.inv(A.T @ A) * float(r @ r) / dof
    else:
        cov = np.full((2, 2), np.nan)
    return Extrapolation(float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]))
