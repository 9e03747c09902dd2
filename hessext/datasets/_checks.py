"""Argument checks shared by the data generators."""

from __future__ import annotations

import numpy as np
import torch


def finite_vector(values, name: str, fn: str) -> torch.Tensor:
    """A scalar or 1-D array of finite numbers as a float64 tensor [N]; ValueError otherwise."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{fn}: {name} must be a scalar or 1-D, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{fn}: {name} must be finite")
    return t


def check_n_seed(n, seed, fn: str) -> None:
    """Refuse an n that is not an int >= 1 and a seed that is not an int, naming ``fn``."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{fn}: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{fn}: n must be >= 1, got {n}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")


def check_float_matrix(t, name: str, columns: str, fn: str) -> torch.Tensor:
    """``t`` if it is a float tensor [N, len(columns)]; TypeError/ValueError naming ``fn``,
    ``name`` and the columns (e.g. "x, y, v_x, v_y") otherwise."""
    width = len(columns.split(", "))
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor [N, {width}], got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != width or not t.is_floating_point():
        raise ValueError(
            f"{fn}: {name} must be a float tensor [N, {width}] of ({columns}), got {t.dtype} {tuple(t.shape)}"
        )
    return t
