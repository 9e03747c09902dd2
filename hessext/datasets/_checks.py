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
