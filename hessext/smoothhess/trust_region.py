"""The exact second-order step in a ball: the trust-region subproblem

    minimise  m(δ) = gᵀδ + ½ δᵀHδ   subject to ‖δ‖ ≤ r,

solved from one symmetric eigendecomposition H = Q Λ Qᵀ (the SmoothHess "attack"; the original
relaxed it to an SDP over eigenpairs of an unsorted general eigensolver). Optimality (Moré &
Sorensen): δ = -(H + μI)⁻¹ g with μ ≥ max(0, -λ_min), μ(r - ‖δ‖) = 0; when g has no component
along the λ_min eigenspace and the step at μ = -λ_min is shorter than r (the hard case), the
rest of the radius goes along that eigenspace.

The SmoothHess attack restricts the problem to the top eigen-subspace of H first (its spectral
truncation rule, :func:`spectral_truncation`): :func:`subspace_second_order_step` solves that
reduced problem exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "second_order_step",
    "subspace_second_order_step",
    "spectral_truncation",
    "TrustRegionStep",
    "SubspaceStep",
]


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


class SubspaceStep(NamedTuple):
    """delta: [B, D] (or [D]) minimiser within the kept eigen-subspace; value: [B] (or scalar)
    value of the reduced model g̃ᵀδ̃ + ½δ̃ᵀΛ_kδ̃; n_kept: [B] int64 (or scalar), the subspace
    dimension k of each point."""

    delta: torch.Tensor
    value: torch.Tensor
    n_kept: torch.Tensor


def spectral_truncation(eigenvalues: torch.Tensor, energy: float, extra: int) -> torch.Tensor:
    """The SmoothHess attack's subspace size: with |λ| sorted in descending order, k = (the first
    index where the cumulative |λ| exceeds energy·Σ|λ|) + extra, at most D (the original's rule,
    whose eigenpairs came unsorted from a general eigensolver: here they are sorted by |λ|), at
    least 1.
    eigenvalues: [B, D] (any order); returns k [B] int64. A zero spectrum keeps ``extra``."""
    mag = eigenvalues.abs().sort(dim=-1, descending=True).values
    cum = mag.cumsum(-1)
    over = cum > energy * cum[..., -1:]
    first = torch.where(over.any(-1), over.int().argmax(-1), torch.zeros_like(over[..., 0], dtype=torch.long))
    return (first + extra).clamp(min=1, max=eigenvalues.shape[-1]).long()


def subspace_second_order_step(
    grad: torch.Tensor, hess: torch.Tensor, radius: float, *, energy: float = 0.98, extra: int = 10
) -> SubspaceStep:
    """The second-order step of the SmoothHess attack: minimise g̃ᵀδ̃ + ½δ̃ᵀΛ_kδ̃ over ‖δ̃‖ ≤ r
    in the span V_k of the k eigenvectors of largest |λ| (k from :func:`spectral_truncation`
    with the paper's energy T = 0.98 and 10 extra directions), g̃ = V_kᵀg, δ = V_k δ̃. The
    original solved this reduced problem by an SDP relaxation (cvxpy); it is a trust-region
    subproblem, solved exactly by :func:`second_order_step`.

    grad: [D] or [B, D]; hess: [D, D] or [B, D, D] (symmetrised). To attack (decrease the
    output), pass the gradient and Hessian of the output as they are."""
    if not (0 < energy <= 1):
        raise ValueError(f"subspace_second_order_step: energy must be in (0, 1], got {energy!r}")
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
        raise ValueError(f"subspace_second_order_step: extra must be an int >= 0, got {extra!r}")
    single = grad.dim() == 1
    g = (grad[None] if single else grad).to(torch.float64)
    H = (hess[None] if hess.dim() == 2 else hess).to(torch.float64)
    if g.dim() != 2 or H.shape != (g.shape[0], g.shape[1], g.shape[1]):
        raise ValueError(
            f"subspace_second_order_step: grad [B, D] and hess [B, D, D] expected, got "
            f"{tuple(grad.shape)} and {tuple(hess.shape)}"
        )
    lam, V = torch.linalg.eigh(0.5 * (H + H.transpose(-1, -2)))
    order = lam.abs().argsort(dim=-1, descending=True, stable=True)
    lam = lam.gather(-1, order)
    V = V.gather(-1, order[:, None, :].expand_as(V))
    k = spectral_truncation(lam, energy, extra)
    deltas, values = [], []
    for b in range(g.shape[0]):
        Vk = V[b, :, : int(k[b])]
        step = second_order_step(Vk.T @ g[b], torch.diag(lam[b, : int(k[b])]), radius)
        deltas.append(Vk @ step.delta)
        values.append(step.value)
    delta, value = torch.stack(deltas), torch.stack(values)
    if single:
        return SubspaceStep(delta[0], value[0], k[0])
    return SubspaceStep(delta, value, k)
