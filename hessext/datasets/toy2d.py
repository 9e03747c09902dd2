"""The low-dimensional sets of the decision-boundary study (Sabanayagam, Behrens, Adomaityte,
Dawid 2023; docs/boundary-paper.md), exactly as the paper's code defines them.

Every maker returns (x, y): x [N, D] float32 (D = 2, or 1 for the intro set), y [N] int64, and
draws from the same generator, with the same default seed and in the same order as the
original code, so that the default calls give the paper's very points:

| maker | definition | seed | N | C |
|---|---|---|---|---|
| three_gaussians | means (2, −1), (−2, 0), (0, 2); std (0.5, 0.5), (0.5, 1), (0.5, 0.5) | 42 | 300 | 3 |
| hierarchical | means (2, −1), (2, 1), (−2, 1), (−2, −1); std (0.5, 0.55) | 34 | 300 | 4 |
| hierarchical(classes=2) | the same points, {0, 1} → 0 and {2, 3} → 1 | 34 | 300 | 2 |
| circles | scikit-learn make_circles(noise 0.1, factor 0.5, shuffled) | 28 | 200 | 2 |
| moons | scikit-learn make_moons(noise 0.1, shuffled) | 28 | 200 | 2 |
| checkerboard | four blobs of std (0.3, 0.1), :func:`checkerboard_means` | 41 | 400 | 2 |
| intro1d | x = 0.5, 1.0, 1.1, 1.3, 1.4, 1.45; y = 0, 1, 1, 1, 0, 0 | – | 6 | 2 |

The Gaussian sets draw point after point, class after class, each point as
``numpy.random.RandomState(seed).normal(mean, std)`` (the numpy field the paper calls "vars"
is a standard deviation); ``numpy``'s legacy generator is used for that reason (it is frozen:
the same seed gives the same numbers in every numpy version). The points are ordered class by
class (circles and moons come shuffled, as scikit-learn makes them); :func:`split` makes the
paper's train/test/validation split and :func:`permuted_labels` its random labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "GAUSS_MEANS",
    "GAUSS_STDS",
    "HIERARCHICAL_MEANS",
    "HIERARCHICAL_STD",
    "CHECKERBOARD_LAYOUTS",
    "CHECKERBOARD_STD",
    "INTRO_X",
    "INTRO_Y",
    "three_gaussians",
    "hierarchical",
    "circles",
    "moons",
    "checkerboard",
    "checkerboard_means",
    "intro1d",
    "permuted_labels",
    "Split",
    "split",
]

GAUSS_MEANS = ((2.0, -1.0), (-2.0, 0.0), (0.0, 2.0))
GAUSS_STDS = ((0.5, 0.5), (0.5, 1.0), (0.5, 0.5))
# Hierarchical: two super-clusters at x = +2 (classes 0, 1) and x = −2 (classes 2, 3), each cut
# in two along y: an easy boundary (x = 0) and two harder ones (y = 0 on each side).
HIERARCHICAL_MEANS = ((2.0, -1.0), (2.0, 1.0), (-2.0, 1.0), (-2.0, -1.0))
HIERARCHICAL_STD = (0.5, 0.55)
# Checkerboard ("_close" layouts of the paper): four elongated blobs, classes alternating
# along y on two columns x = ±a; 'linear' (a = 0.8) is separable by a line, 'noisy' (a = 0.5)
# brings the columns closer. Blob order (as drawn): class 0 at (a, −3), (a, 1); class 1 at
# (−a, −1), (−a, 3).
CHECKERBOARD_LAYOUTS = {"linear": 0.8, "noisy": 0.5}
CHECKERBOARD_STD = (0.3, 0.1)
INTRO_X = (0.5, 1.0, 1.1, 1.3, 1.4, 1.45)
INTRO_Y = (0, 1, 1, 1, 0, 0)


def _check_n(n, fn: str, multiple: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < multiple or n % multiple:
        raise ValueError(f"{fn}: n must be a positive int multiple of {multiple}, got {n!r}")


def _check_seed(seed, fn: str) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise TypeError(f"{fn}: seed must be an int in [0, 2**32), got {seed!r}")
    return seed


def _gaussian_blobs(means, stds, labels, per_blob: int, seed: int):
    """``per_blob`` points from each axis-aligned Gaussian in turn, drawn as the paper does
    (RandomState(seed).normal(mean, std) per point; the vectorised call gives the same numbers
    in the same order)."""
    rs = np.random.RandomState(seed)
    xs = [rs.normal(mean, std, size=(per_blob, len(mean))) for mean, std in zip(means, stds)]
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32))
    y = torch.tensor(labels, dtype=torch.int64).repeat_interleave(per_blob)
    return x, y


def three_gaussians(n: int = 300, seed: int = 42):
    """Three Gaussian classes (GAUSS_MEANS, per-axis std GAUSS_STDS), n/3 points each, class by
    class. Returns x [n, 2] float32, y [n] int64 in {0, 1, 2}."""
    fn = "three_gaussians"
    _check_n(n, fn, 3)
    return _gaussian_blobs(GAUSS_MEANS, GAUSS_STDS, (0, 1, 2), n // 3, _check_seed(seed, fn))


def hierarchical(n: int = 300, seed: int = 34, *, classes: int = 4):
    """Four Gaussian classes in two super-clusters (HIERARCHICAL_MEANS, std HIERARCHICAL_STD),
    n/4 points each; ``classes=2`` merges them into the super-clusters (labels {0,1} → 0,
    {2,3} → 1), the paper's 2-class variant. Returns x [n, 2] float32, y [n] int64."""
    fn = "hierarchical"
    _check_n(n, fn, 4)
    if classes not in (2, 4):
        raise ValueError(f"{fn}: classes must be 4 or 2 (merged super-clusters), got {classes!r}")
    x, y = _gaussian_blobs(
        HIERARCHICAL_MEANS, (HIERARCHICAL_STD,) * 4, (0, 1, 2, 3), n // 4, _check_seed(seed, fn)
    )
    return x, (y // 2 if classes == 2 else y)


def checkerboard_means(layout: str) -> tuple[tuple[float, float], ...]:
    """The four blob centres of a checkerboard layout in drawing order (classes 0, 0, 1, 1)."""
    if layout not in CHECKERBOARD_LAYOUTS:
        raise ValueError(
            f"checkerboard: layout must be one of {sorted(CHECKERBOARD_LAYOUTS)}, got {layout!r}"
        )
    a = CHECKERBOARD_LAYOUTS[layout]
    return ((a, -3.0), (a, 1.0), (-a, -1.0), (-a, 3.0))


def checkerboard(n: int = 400, seed: int = 41, *, layout: str = "linear"):
    """The paper's Gaussian checkerboard ``gauss_checkerboard_<layout>_close``: four blobs with
    std CHECKERBOARD_STD at :func:`checkerboard_means` (layout 'linear' or 'noisy'), n/4 points
    each. Returns x [n, 2] float32, y [n] int64 in {0, 1}."""
    fn = "checkerboard"
    _check_n(n, fn, 4)
    means = checkerboard_means(layout)
    return _gaussian_blobs(means, (CHECKERBOARD_STD,) * 4, (0, 0, 1, 1), n // 4, _check_seed(seed, fn))


def _sklearn_points(maker: str, n: int, seed: int, **kwargs):
    # scikit-learn is imported here, not at module level: it is the documented lazy load of the
    # data sets (python_tests/test_architecture.py) and costs ~1 s of import time.
    from sklearn import datasets as skd

    x, y = getattr(skd, maker)(n_samples=n, shuffle=True, random_state=seed, **kwargs)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def circles(n: int = 200, noise: float = 0.1, factor: float = 0.5, seed: int = 28):
    """scikit-learn's ``make_circles(n, shuffle=True, noise, random_state=seed, factor)``, the
    paper's call: class 0 on the unit circle, class 1 on the circle of radius ``factor``, plus
    isotropic Gaussian noise of std ``noise``. Returns x [n, 2] float32, y [n] int64."""
    fn = "circles"
    _check_n(n, fn, 2)
    if not 0 < factor < 1:
        raise ValueError(f"{fn}: factor must be in (0, 1), got {factor}")
    if not noise >= 0:
        raise ValueError(f"{fn}: noise must be >= 0, got {noise}")
    return _sklearn_points("make_circles", n, _check_seed(seed, fn), noise=noise, factor=factor)


def moons(n: int = 200, noise: float = 0.1, seed: int = 28):
    """scikit-learn's ``make_moons(n, shuffle=True, noise, random_state=seed)``, the paper's
    call: class 0 the upper half circle, class 1 the lower one shifted by (1, 1/2), plus
    Gaussian noise of std ``noise``. Returns x [n, 2] float32, y [n] int64."""
    fn = "moons"
    _check_n(n, fn, 2)
    if not noise >= 0:
        raise ValueError(f"{fn}: noise must be >= 0, got {noise}")
    return _sklearn_points("make_moons", n, _check_seed(seed, fn), noise=noise)


def intro1d():
    """The paper's 1-D introduction set: x [6, 1] float32 = INTRO_X, y [6] int64 = INTRO_Y (a
    class-1 interval inside class 0: two boundaries). It is used whole for training and
    testing."""
    return torch.tensor(INTRO_X, dtype=torch.float32).reshape(-1, 1), torch.tensor(INTRO_Y)


def permuted_labels(y: torch.Tensor, seed: int = 28, *, within: Sequence[Sequence[int]] | None = None):
    """The paper's random labels: a fixed permutation of the labels of the WHOLE set (before
    the split), ``numpy.random.RandomState(seed).permutation(y)``; the class counts stay as
    they were. ``within`` (e.g. ((0, 1), (2, 3)), the hierarchical set's "within hierarchy"
    variant): permute only inside each group of classes, group after group.
    y: [N] int64 → [N] int64."""
    fn = "permuted_labels"
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"{fn}: y must be integer labels [N], got {getattr(y, 'shape', type(y).__name__)}")
    rs = np.random.RandomState(_check_seed(seed, fn))
    labels = y.numpy()
    if within is None:
        return torch.from_numpy(rs.permutation(labels).astype(np.int64))
    out = labels.copy()
    for group in within:
        idx = np.nonzero(np.isin(labels, list(group)))[0]
        out[idx] = rs.permutation(labels[idx])
    return torch.from_numpy(out.astype(np.int64))


class Split(NamedTuple):
    """x_train [n_train, ...], y_train [n_train], and likewise for test and val."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def split(x: torch.Tensor, y: torch.Tensor, fractions: Sequence[float] = (0.5, 0.2, 0.3), seed: int = 42):
    """The paper's split: ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))``
    cut into train, test and validation parts of floor(f_train·N), floor(f_test·N) and the rest
    points (seed 42 and 50/20/30 as in the paper). x: [N, ...]; y: [N]. Every point lands in
    exactly one part. fractions (1, 0, 0): all points in every part (the intro set)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split: fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(x) != len(y):
        raise ValueError(f"split: x and y differ in length ({len(x)} vs {len(y)})")
    n = len(y)
    if fractions[0] == 1:
        return Split(x, y, x, y, x, y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_check_seed(seed, "split")))
    n_train, n_test = int(fractions[0] * n), int(fractions[1] * n)
    parts = perm[:n_train], perm[n_train : n_train + n_test], perm[n_train + n_test :]
    return Split(*(t for idx in parts for t in (x[idx], y[idx])))
