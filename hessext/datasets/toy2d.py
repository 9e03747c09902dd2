"""Two-dimensional toy sets of the decision-boundary study (Sabanayagam et al. 2023; docs/methods.md §6).

Every maker returns (x, y): x [N, 2] float32, y [N] int64, drawn from a torch.Generator seeded
with ``seed``, so equal arguments give equal data on any machine with the same torch.
Points are ordered class by class; :func:`split` shuffles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = [
    "GAUSS_MEANS",
    "GAUSS_STDS",
    "CHECKERBOARD_CENTRES",
    "CHECKERBOARD_STD",
    "HIERARCHICAL_MEANS",
    "HIERARCHICAL_STD",
    "three_gaussians",
    "circles",
    "moons",
    "checkerboard",
    "hierarchical",
    "Split",
    "split",
]

GAUSS_MEANS = ((2.0, -1.0), (-2.0, 0.0), (0.0, 2.0))
GAUSS_STDS = ((0.5, 0.5), (0.5, 1.0), (0.5, 0.5))
# Checkerboard: classes alternate along the y axis on two columns x = ±0.8.
CHECKERBOARD_CENTRES = (((0.8, -3.0), (0.8, 1.0)), ((-0.8, -1.0), (-0.8, 3.0)))
CHECKERBOARD_STD = (0.3, 0.1)
# Hierarchical: two super-clusters 6 apart on the x axis, each split into two sub-clusters
# 1.5 apart on the y axis (class = 2·super + sub). The four sub-clusters are all separable,
# but the super-cluster boundary is far easier than the two inner ones: a set with an easy
# and a hard level of the decision boundary.
HIERARCHICAL_MEANS = ((-3.0, -0.75), (-3.0, 0.75), (3.0, -0.75), (3.0, 0.75))
HIERARCHICAL_STD = (0.5, 0.3)


def _check_n(n: int, fn: str, minimum: int = 1) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < minimum:
        raise ValueError(f"{fn}: n must be an int >= {minimum}, got {n!r}")


def _generator(seed: int, fn: str) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _counts(n: int, parts: int) -> list[int]:
    """n split into `parts` near-equal counts, the first ones one larger (sklearn's way)."""
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def _gaussian_blobs(n, means, stds, labels, gen):
    """Axis-aligned Gaussian blobs, _counts(n, len(means)) points each."""
    xs, ys = [], []
    for count, mean, std, label in zip(_counts(n, len(means)), means, stds, labels):
        z = torch.randn(count, 2, generator=gen, dtype=torch.float64)
        xs.append(torch.tensor(mean, dtype=torch.float64) + z * torch.tensor(std, dtype=torch.float64))
        ys.append(torch.full((count,), label, dtype=torch.int64))
    return torch.cat(xs).to(torch.float32), torch.cat(ys)


def three_gaussians(n: int = 300, seed: int = 0):
    """Three Gaussian classes, means GAUSS_MEANS, per-axis std GAUSS_STDS; n/3 points each.
    Returns x [n, 2] float32, y [n] int64 in {0, 1, 2}."""
    _check_n(n, "three_gaussians", 3)
    return _gaussian_blobs(n, GAUSS_MEANS, GAUSS_STDS, (0, 1, 2), _generator(seed, "three_gaussians"))


def checkerboard(n: int = 200, seed: int = 0):
    """Four blobs with std CHECKERBOARD_STD, alternating classes: class 0 at (0.8, -3) and
    (0.8, 1), class 1 at (-0.8, -1) and (-0.8, 3); n/4 points per blob.
    Returns x [n, 2] float32, y [n] int64 in {0, 1}."""
    _check_n(n, "checkerboard", 4)
    (a, b), (c, d) = CHECKERBOARD_CENTRES
    return _gaussian_blobs(
        n, (a, c, b, d), (CHECKERBOARD_STD,) * 4, (0, 1, 0, 1), _generator(seed, "checkerboard")
    )


def hierarchical(n: int = 400, seed: int = 0):
    """Four classes in two super-clusters (see HIERARCHICAL_MEANS): class k at
    HIERARCHICAL_MEANS[k] with per-axis std HIERARCHICAL_STD, n/4 points each.
    Returns x [n, 2] float32, y [n] int64 in {0, 1, 2, 3}."""
    _check_n(n, "hierarchical", 4)
    return _gaussian_blobs(
        n, HIERARCHICAL_MEANS, (HIERARCHICAL_STD,) * 4, (0, 1, 2, 3), _generator(seed, "hierarchical")
    )


def circles(n: int = 200, noise: float = 0.1, factor: float = 0.5, seed: int = 0):
    """sklearn's make_circles: class 0 on the unit circle, class 1 on the circle of radius
    `factor` (the inner one gets the odd point), angles evenly spaced over [0, 2π) as in sklearn,
    plus isotropic Gaussian noise of std `noise`. Returns x [n, 2] float32, y [n] int64."""
    _check_n(n, "circles", 2)
    if not 0 < factor < 1:
        raise ValueError(f"circles: factor must be in (0, 1), got {factor}")
    if noise < 0:
        raise ValueError(f"circles: noise must be >= 0, got {noise}")
    gen = _generator(seed, "circles")
    n_out = n // 2  # sklearn's split: the inner/lower class gets the odd point
    n_in = n - n_out
    t_out = torch.linspace(0, 2 * math.pi, n_out + 1, dtype=torch.float64)[:-1]
    t_in = torch.linspace(0, 2 * math.pi, n_in + 1, dtype=torch.float64)[:-1]
    x = torch.cat(
        [torch.stack([t_out.cos(), t_out.sin()], 1), factor * torch.stack([t_in.cos(), t_in.sin()], 1)]
    )
    x = x + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_out, dtype=torch.int64), torch.ones(n_in, dtype=torch.int64)])
    return x.to(torch.float32), y


def moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """sklearn's make_moons: class 0 the upper half circle (cos t, sin t), class 1 the lower
    (1 - cos t, 1/2 - sin t), t evenly spaced over [0, π], plus Gaussian noise of std `noise`.
    Returns x [n, 2] float32, y [n] int64."""
    _check_n(n, "moons", 2)
    if noise < 0:
        raise ValueError(f"moons: noise must be >= 0, got {noise}")
    gen = _generator(seed, "moons")
    n_out = n // 2  # sklearn's split: the inner/lower class gets the odd point
    n_in = n - n_out
    t_out = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    t_in = torch.linspace(0, math.pi, n_in, dtype=torch.float64)
    x = torch.cat(
        [
            torch.stack([t_out.cos(), t_out.sin()], 1),
            torch.stack([1 - t_in.cos(), 0.5 - t_in.sin()], 1),
        ]
    )
    x = x + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_out, dtype=torch.int64), torch.ones(n_in, dtype=torch.int64)])
    return x.to(torch.float32), y


class Split(NamedTuple):
    """x_train [n_train, ...], y_train [n_train], and likewise for test and val."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def split(x: torch.Tensor, y: torch.Tensor, fractions: Sequence[float] = (0.5, 0.2, 0.3), seed: int = 0):
    """Shuffle (seeded) and cut into train/test/val by `fractions` (the paper's 50/20/30).

    x: [N, ...]; y: [N]. Sizes are floor(f·N) for train and test, the rest for val, so every
    point lands in exactly one part.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split: fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(x) != len(y):
        raise ValueError(f"split: x and y differ in length ({len(x)} vs {len(y)})")
    n = len(y)
    perm = torch.randperm(n, generator=_generator(seed, "split"))
    n_train, n_test = int(fractions[0] * n), int(fractions[1] * n)
    parts = perm[:n_train], perm[n_train : n_train + n_test], perm[n_train + n_test :]
    return Split(*(t for idx in parts for t in (x[idx], y[idx])))
