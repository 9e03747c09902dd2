"""The errors curvature objects raise, and the one wording of "not positive definite"."""

from __future__ import annotations

__all__ = ["NotPositiveDefiniteError", "HessianTooLargeError", "not_pd_message"]


class NotPositiveDefiniteError(ValueError):
    """H + δI is not positive definite, so a Cholesky or CG solve would be meaningless."""


class HessianTooLargeError(MemoryError):
    """The dense [P, P] float64 matrix (with the assembly's working memory) does not fit in the
    memory available."""


def not_pd_message(who: str, lam_min: float, damping: float) -> str:
    """The one wording of "H + δI is not positive definite", with the damping that would do."""
    needed = max(0.0, -lam_min)
    return (
        f"{who}: H + damping*I is not positive definite: lambda_min(H) = {lam_min:.6g}, "
        f"damping = {damping:.6g}, so lambda_min(H + damping*I) = {lam_min + damping:.6g}. "
        f"Use damping > {needed:.6g} (e.g. {needed * 1.1 + 1e-8:.6g}), or H.pinv(V, rcond=...) "
        f"for an eigendecomposition pseudo-inverse, or method='eigh' on a damped matrix."
    )
