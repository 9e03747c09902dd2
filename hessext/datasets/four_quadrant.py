"""The "four quadrant" toy of SmoothHess (Torop et al., NeurIPS 2023): f(x) = c_q·x1·x2 with a
different constant c_q in each quadrant q of the plane (the paper's c = 5, −10, 12, 3 in
quadrants I–IV), and its Gaussian-smoothed Hessian at the origin in closed form.

f is 2-homogeneous, so the smoothed Hessian at the origin, ∇²(f * N(0, σI))(0), is the same for
every σ: from the kinks of ∂f/∂x1 along the x2-axis and of ∂f/∂x2 along the x1-axis
(:func:`smoothed_hessian_at_origin` derives it),

    H01 = mean(c_q),   H00 = ((c_I − c_II) + (c_III − c_IV))/(2π),
                       H11 = ((c_I − c_IV) + (c_III − c_II))/(2π),

which for the paper's constants gives H01 = 2.5 and H00 = H11 = 24/(2π) ≈ 3.820.
"""

from __future__ import annotations

import math

import torch

__all__ = ["PAPER_C", "four_quadrant", "smoothed_hessian_at_origin", "scale_mixture"]

PAPER_C = (5.0, -10.0, 12.0, 3.0)
"""c_q in quadrants I (x1 ≥ 0, x2 ≥ 0), II (x1 < 0, x2 ≥ 0), III (both < 0), IV (x1 ≥ 0, x2 < 0)."""


def _constants(c) -> torch.Tensor:
    c = torch.as_tensor(c, dtype=torch.float64)
    if c.shape != (4,) or not torch.isfinite(c).all():
        raise ValueError(f"four_quadrant: c must be 4 finite numbers (quadrants I-IV), got {c.tolist()}")
    return c


def four_quadrant(x: torch.Tensor, c=PAPER_C) -> torch.Tensor:
    """f(x) = c_q·x1·x2 for x [N, 2] (any float dtype) → [N], q the quadrant of x."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"four_quadrant: x must be [N, 2], got {getattr(x, 'shape', type(x).__name__)}")
    cq = _constants(c).to(x.dtype).to(x.device)
    right, up = x[:, 0] >= 0, x[:, 1] >= 0
    q = torch.where(right, torch.where(up, 0, 3), torch.where(up, 1, 2))
    return cq[q] * x[:, 0] * x[:, 1]


def smoothed_hessian_at_origin(c=PAPER_C) -> torch.Tensor:
    """The closed-form Hessian [2, 2] (float64) of f * N(0, σI) at the origin, for any σ > 0.

    ∂f/∂x1 = c_q x2 jumps by (c_I − c_II)·x2 across x1 = 0 where x2 > 0 and by
    (c_III − c_IV)·|x2| where x2 < 0; smoothing turns the jump into φ_σ(0)·E[jump(x2)] =
    ((c_I − c_II) + (c_III − c_IV))/(2π), since φ_σ(0) = 1/√(2πσ) and E[x2⁺] = √σ/√(2π). The
    same for x2. Off the axes ∂²f/∂x1∂x2 = c_q, whose smoothed mean is the average of the c_q
    (each quadrant has probability ¼)."""
    cI, cII, cIII, cIV = _constants(c).tolist()
    h00 = ((cI - cII) + (cIII - cIV)) / (2 * math.pi)
    h11 = ((cI - cIV) + (cIII - cII)) / (2 * math.pi)
    h01 = (cI + cII + cIII + cIV) / 4
    return torch.tensor([[h00, h01], [h01, h11]], dtype=torch.float64)


def scale_mixture(n: int, *, low: float, high: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs for the four-quadrant regression at every scale: x = s·z with z ~ N(0, I₂)
    and s log-uniform on [low, high]. Returns (x [n, 2] float32, s [n] float32), seeded."""
    if not (0 < low < high) or not math.isfinite(high):
        raise ValueError(f"scale_mixture: need 0 < low < high, got low={low}, high={high}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"scale_mixture: n must be a positive int, got {n!r}")
    g = torch.Generator().manual_seed(int(seed))
    s = torch.empty(n, dtype=torch.float64).uniform_(math.log(low), math.log(high), generator=g).exp()
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return (s[:, None] * z).float(), s.float()
