"""Conjugate gradients on many right-hand sides at once.

Each column runs its own CG recurrence (its own step lengths), but all columns share one operator
product per iteration, so the cost per iteration is one H @ [P, M] — the product a Hessian-vector
engine is fastest at. (O'Leary's block CG couples the columns through M×M solves and breaks down
when the block loses rank; independent recurrences never do.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hessext.curvature.errors import NotPositiveDefiniteError, not_pd_message

__all__ = ["block_cg"]


def block_cg(
    apply_A: Callable[[torch.Tensor], torch.Tensor],
    B: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    who: str = "block_cg",
    damping: float = 0.0,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Solve A X = B for symmetric positive definite A, B [P, M] (float64).

    Stops each column when ‖b − A x‖ ≤ tol·‖b‖. A direction p with pᵀAp ≤ 0 proves A is not
    positive definite: raises NotPositiveDefiniteError with the Rayleigh quotient pᵀAp/pᵀp
    (an upper bound on λ_min(A)) and the damping that would be needed. Not converging within
    max_iter (default 10·P) iterations raises RuntimeError. Returns (X, {'iterations', 'residuals'})."""
    P, M = B.shape
    max_iter = 10 * P if max_iter is None else int(max_iter)
    X = torch.zeros_like(B) if x0 is None else x0.clone()
    R = B - apply_A(X) if x0 is not None else B.clone()
    b_norm = B.norm(dim=0)
    target = tol * torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    Pdir = R.clone()
    rr = (R * R).sum(0)
    active = R.norm(dim=0) > target
    it = 0
    while bool(active.any()):
        if it >= max_iter:
            worst = float((R.norm(dim=0) / b_norm.clamp_min(1e-300)).max())
            raise RuntimeError(
                f"{who}: conjugate gradients did not reach relative residual {tol:g} in "
                f"{max_iter} iterations (worst column at {worst:.3g}); raise max_iter "
                f"or damping"
            )
        idx = active.nonzero().squeeze(1)
        Pa = Pdir[:, idx]
        AP = apply_A(Pa)
        pAp = (Pa * AP).sum(0)
        pp = (Pa * Pa).sum(0)
        bad = pAp <= 1e-14 * pp * AP.abs().max().clamp_min(1.0)
        if bool(bad.any()):
            rayleigh = float((pAp[bad] / pp[bad]).min())
            raise NotPositiveDefiniteError(
                not_pd_message(who, rayleigh - damping, damping)
                + " (lambda_min here is an upper bound found by CG)"
            )
        alpha = rr[idx] / pAp
        X[:, idx] += alpha * Pa
        R[:, idx] -= alpha * AP
        rr_new = (R[:, idx] * R[:, idx]).sum(0)
        beta = rr_new / rr[idx]
        Pdir[:, idx] = R[:, idx] + beta * Pa
        rr[idx] = rr_new
        active[idx] = rr_new.sqrt() > target[idx]
        it += 1
    return X, {"iterations": it, "residuals": (R.norm(dim=0) / b_norm.clamp_min(1e-300))}
