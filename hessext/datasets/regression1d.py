"""A one-dimensional regression problem with a region to extrapolate into: the data of the
twin-network comparison (docs/wetzel-invariants.md).

    y = f(x) + ε,   f(x) = sin(3x) + x²/2,   ε ~ N(0, noise²),   x ~ U[−1.5, 1.5]

f bends both ways inside the training interval and keeps growing outside it, so a network
that has only seen [−1.5, 1.5] errs more the farther out it is asked: a test set that reaches
outside (e.g. [−2.5, 2.5]) tells whether an uncertainty estimate grows with the error.
"""

from __future__ import annotations

import torch

from hessext.datasets._checks import check_n_seed

__all__ = ["REGRESSION_1D_RANGE", "regression_1d_function", "regression_1d"]

REGRESSION_1D_RANGE = (-1.5, 1.5)


def regression_1d_function(x: torch.Tensor) -> torch.Tensor:
    """f(x) = sin(3x) + x²/2, elementwise (the noiseless truth)."""
    return torch.sin(3.0 * x) + 0.5 * x * x


def regression_1d(
    n: int, *, seed: int, noise: float = 0.2, low: float | None = None, high: float | None = None
):
    """(x [n, 1], y [n]) float64: x ~ U[low, high] (default REGRESSION_1D_RANGE),
    y = regression_1d_function(x) + N(0, noise²). Seeded by ``seed`` alone."""
    fn = "regression_1d"
    check_n_seed(n, seed, fn)
    lo = REGRESSION_1D_RANGE[0] if low is None else float(low)
    hi = REGRESSION_1D_RANGE[1] if high is None else float(high)
    if not lo < hi:
        raise ValueError(f"{fn}: need low < high, got [{lo}, {hi}]")
    if not noise >= 0:
        raise ValueError(f"{fn}: noise must be >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    y = regression_1d_function(x[:, 0]) + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y
