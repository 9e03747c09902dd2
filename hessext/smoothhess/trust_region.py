"""The exact second-order step in a ball: the trust-region subproblem

    minimise  m(δ) = gᵀδ + ½ δᵀHδ   subject to ‖δ‖ ≤ r,

solved from one symmetric eigendecomposition H = Q Λ Qᵀ (the SmoothHess "attack"; the original
relaxed it to an SDP over eigenpairs of an unsorted general eigensolver). Optimality (Moré &
Sorensen): δ = -(H + μI)⁻¹ g with μ ≥ max(0, -λ_min), μ(r - ‖δ‖) = 0; when g has no component
along the λ_min eigenspace and the step at μ = -λ_min is shorter than r (the hard case), the
rest of the radius goes along that eigenspace.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["second_order_step", "TrustRegionStep"]


class TrustRegionStep(NamedTuple):
    """delta: [B, D] (or [D]) minimiser; value: [B] (or scalar) model value gᵀδ + ½δᵀHδ."""

    delta: torch.Tensor
    value: torch.Tensor


def second_order_step(grad: torch.Tensor, hess: torch.Tensor, radius: float) -> TrustRegionStep:
    """Exact minimiser of gᵀδ + ½δᵀHδ over ‖δ‖ ≤ radius, hard case included.

    grad: [D] or [B, D]; hess: [D, D] or [B, D, D] (symmetrised before use). float64 inside;
    returns TrustRegionStep(delta, value) in float64. To attack (increase the output), pass
    -grad and -hess."""
    if not (isinstance(radius, (int, float)) and radius > 0 and math.isfinite(radius)):
        raise ValueError(f"second_order_step: radius must be finite and > 0, got {radius!r}")
    single = grad.dim() == 1
    g = (grad[None] if single else grad).to(torch.float64)
    H = (hess[None] if hess.dim() == 2 else hess).to(torch.float64)
    if g.dim() != 2 or H.shape != (g.shape[0], g.shape[1], g.shape[1]):
        raise ValueError(
            f"second_order_step: grad [B, D] and hess [B, D, D] expected, got "
            f"{tuple(grad.shape)} and {tuple(hess.shape)}"
        )
    H = 0.5 * (H + H.transpose(-1, -2))
    lam, Q = torch.linalg.eigh(H)  # ascending
    gh = torch.einsum("bdk,bd->bk", Q, g)
    scale = lam.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    gnorm = g.norm(dim=-1, keepdim=True)
    lam_min = lam[:, :1]
    # eigenvalues equal to λ_min up to rounding of the eigensolver
    at_min = lam <= lam_min + 64 * torch.finfo(torch.float64).eps * scale
    r = float(radius)
    deltas, values = [], []
    for b in range(g.shape[0]):
        lb, gb, mb = lam[b], gh[b], at_min[b]
        d = None
        if lb[0] > 0:
            newton = -gb / lb
            if newton.norm() <= r:
                d = newton
        if d is None:
            lo = max(0.0, -float(lb[0]))
            g_min = gb[mb].norm()
            # step with μ = -λ_min on the other directions (finite)
            if g_min <= 1e-12 * (float(gnorm[b]) + 1e-300):
                rest = torch.where(mb, torch.zeros_like(gb), -gb / (lb + lo).where(~mb, torch.ones_like(lb)))
                if rest.norm() <= r:  # hard case: fill the radius along the λ_min eigenvector
                    tau = math.sqrt(max(r * r - float(rest.norm()) ** 2, 0.0))
                    d = rest.clone()
                    d[int(mb.nonzero()[0])] = tau
            if d is None:
                # ‖δ(μ)‖ is decreasing on (lo, ∞) and ≤ r at hi: bisection to full precision
                hi = lo + float(gnorm[b]) / r + 1.0
                for _ in range(200):
                    mid = 0.5 * (lo + hi)
                    if mid == lo or mid == hi:
                        break
                    if (gb / (lb + mid)).norm() > r:
                        lo = mid
                    else:
                        hi = mid
                d = -gb / (lb + hi)
        deltas.append(Q[b] @ d)
        values.append(gh[b] @ d + 0.5 * (lb * d * d).sum())
    delta, value = torch.stack(deltas), torch.stack(values)
    if single:
        delta, value = delta[0], value[0]
    return TrustRegionStep(delta, value)
