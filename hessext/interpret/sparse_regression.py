"""Sparse polynomial regression: write a learned quantity (a bottleneck neuron, a Siamese
latent) as a short polynomial in named physical variables (docs/methods.md §9,
docs/wetzel-invariants.md).

The candidate terms are all monomials of the variables up to ``degree`` (without the constant,
which is the intercept), named as the variables joined by "*", powers written "x^2":
degree 2 in (x, y) gives x, y, x^2, x*y, y^2. Each monomial is standardised (zero mean, unit
variance), so that a term's coefficient measures its share of the target's spread whatever the
variables' units, and scikit-learn's orthogonal matching pursuit (OMP,
``sklearn.linear_model.orthogonal_mp``) adds terms one at a time, each the one that best
explains what is left, refitting all chosen coefficients by least squares. The expression
returned is the shortest prefix of that path whose R² comes within ``tolerance`` of the
least-squares fit on all monomials: a network's latent is never exactly a polynomial, so its
last few per mille of variance would otherwise be spent on many tiny terms.
Coefficients are reported in the variables' own units.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PolynomialExpression", "sparse_polynomial_fit", "monomials"]


@dataclass
class PolynomialExpression:
    """target ≈ intercept + Σ coefficients[m] · m, with m a monomial of the named variables.

    coefficients: {monomial: coefficient} of the chosen terms, in the variables' units,
    largest importance first. importance: {monomial: |coefficient| · std(m) / std(target)},
    the standardised coefficient (a term's share of the target's spread). r2: R² of this
    expression on the data it was fitted to; r2_all_terms: R² of least squares on every
    monomial (the ceiling); n_candidates: how many monomials were offered."""

    coefficients: dict[str, float]
    intercept: float
    r2: float
    r2_all_terms: float
    importance: dict[str, float]
    names: tuple[str, ...]
    degree: int
    n_candidates: int
    target: str = "z"

    def __str__(self) -> str:
        body = ""
        for m, c in self.coefficients.items():
            body += f"{c:.4g} {m}" if not body else f" {'-' if c < 0 else '+'} {abs(c):.4g} {m}"
        icpt = self.intercept
        body = f"{body} {'-' if icpt < 0 else '+'} {abs(icpt):.3g}" if body else f"{icpt:.4g}"
        return (
            f"{self.target} ≈ {body}   (R² = {self.r2:.4f}; {len(self.coefficients)} of "
            f"{self.n_candidates} monomials of degree ≤ {self.degree})"
        )

    def predict(self, X) -> np.ndarray:
        """The expression at X [N, d] (the variables in the order of ``names``) → [N]."""
        values, names = monomials(X, self.names, degree=self.degree)
        column = {m: j for j, m in enumerate(names)}
        out = np.full(len(values), self.intercept, dtype=np.float64)
        for m, c in self.coefficients.items():
            out += c * values[:, column[m]]
        return out


def _as_numpy(a, what: str, fn: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    elif not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {what} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{fn}: {what} must hold real numbers, got dtype {a.dtype}")
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: {what} contains non-finite values (nan or inf)")
    return a


def _check_names(names, d: int, fn: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{fn}: names must be a sequence of {d} strings, got {type(names).__name__}")
    names = tuple(names)
    if len(names) != d or not all(isinstance(s, str) and s and s.strip() == s for s in names):
        raise ValueError(f"{fn}: names must be {d} non-empty strings (one per column of X), got {names!r}")
    if len(set(names)) != d or any(c in s for s in names for c in "*^ "):
        raise ValueError(f"{fn}: names must be distinct and contain no '*', '^' or spaces, got {names!r}")
    return names


def _check_degree(degree, fn: str) -> int:
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
        raise ValueError(f"{fn}: degree must be an int >= 1, got {degree!r}")
    return degree


def monomials(X, names: Sequence[str], *, degree: int = 2) -> tuple[np.ndarray, list[str]]:
    """All monomials of the columns of X [N, d] up to ``degree`` (no constant): values
    [N, M] float64 and names, e.g. ["x", "y", "x^2", "x*y", "y^2"] for names ("x", "y")."""
    fn = "monomials"
    X = _as_numpy(X, "X", fn)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"{fn}: X must be [N, d] with N >= 1, got shape {X.shape}")
    names = _check_names(names, X.shape[1], fn)
    columns, labels = [], []
    for total in range(1, _check_degree(degree, fn) + 1):
        for combo in itertools.combinations_with_replacement(range(X.shape[1]), total):
            powers = np.bincount(combo, minlength=X.shape[1])
            columns.append(np.prod(X[:, list(combo)], axis=1))
            labels.append("*".join(n if p == 1 else f"{n}^{p}" for n, p in zip(names, powers) if p))
    return np.stack(columns, axis=1), labels


def sparse_polynomial_fit(
    z, X, names: Sequence[str], *, degree: int = 2, tolerance: float = 0.01, target: str = "z"
) -> PolynomialExpression:
    """The shortest polynomial in the named variables that explains ``z`` (module docstring).

    z: [N] (or [N, 1]) the quantity to explain; X: [N, d] the variables, named by ``names``
    (d strings); tensors or numpy arrays. degree: the highest total degree of a monomial.
    tolerance: how far below the all-monomial R² the sparse expression may stay (0 keeps
    adding terms until nothing improves). target: the name printed for z."""
    fn = "sparse_polynomial_fit"
    zz = _as_numpy(z, "z", fn)
    if zz.ndim == 2 and zz.shape[1] == 1:
        zz = zz[:, 0]
    if zz.ndim != 1:
        raise ValueError(f"{fn}: z must be [N] or [N, 1], got shape {zz.shape}")
    X = _as_numpy(X, "X", fn)
    if X.ndim != 2 or X.shape[0] != len(zz):
        raise ValueError(f"{fn}: X must be [N, d] with the N = {len(zz)} rows of z, got shape {X.shape}")
    if len(zz) < 3:
        raise ValueError(f"{fn}: need at least 3 samples, got {len(zz)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"{fn}: tolerance must be a number in [0, 1), got {tolerance!r}")
    # scikit-learn is imported here, not at the top: 1-3 s that `import hessext` should not pay
    from sklearn.linear_model import orthogonal_mp

    values, labels = monomials(X, names, degree=degree)
    names = tuple(names)
    z_std = float(zz.std())
    if not z_std > 0:
        raise ValueError(f"{fn}: z is constant; there is nothing to explain")

    mean, std = values.mean(0), values.std(0)
    usable = np.flatnonzero(std > 1e-12 * np.maximum(1.0, np.abs(mean)))  # constant columns explain nothing
    n = len(zz)
    # standardised columns scaled to unit norm, as orthogonal_mp assumes
    A = (values[:, usable] - mean[usable]) / (std[usable] * np.sqrt(n))
    zc = zz - zz.mean()
    total = float(zc @ zc)
    full = np.linalg.lstsq(A, zc, rcond=None)[0]
    r2_all = 1.0 - float(((A @ full - zc) ** 2).sum()) / total
    k_max = min(len(usable), n - 1)
    with warnings.catch_warnings():
        # OMP stops early, and says so, once the residual is zero or the remaining monomials
        # are linear combinations of the chosen ones; the shorter path is all there is
        warnings.filterwarnings("ignore", message="Orthogonal matching pursuit ended prematurely")
        path = np.asarray(orthogonal_mp(A, zc, n_nonzero_coefs=k_max, return_path=True))
    if path.ndim == 1:
        path = path[:, None]
    chosen = path[:, -1]
    for k in range(path.shape[1]):
        resid = zc - A @ path[:, k]
        if 1.0 - float(resid @ resid) / total >= r2_all - tolerance:
            chosen = path[:, k]
            break
    resid = zc - A @ chosen
    r2 = 1.0 - float(resid @ resid) / total

    raw = chosen / (std[usable] * np.sqrt(n))
    keep = np.flatnonzero(chosen != 0)
    order = keep[np.argsort(-np.abs(chosen[keep]))]
    coefficients = {labels[usable[j]]: float(raw[j]) for j in order}
    importance = {labels[usable[j]]: float(abs(raw[j]) * std[usable[j]] / z_std) for j in order}
    intercept = float(zz.mean() - sum(raw[j] * mean[usable[j]] for j in keep))
    return PolynomialExpression(
        coefficients=coefficients,
        intercept=intercept,
        r2=r2,
        r2_all_terms=r2_all,
        importance=importance,
        names=names,
        degree=degree,
        n_candidates=len(labels),
        target=target,
    )
