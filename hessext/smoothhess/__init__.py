"""SmoothHess (Torop et al., NeurIPS 2023) and its companions (layer 3): the Hessian of a
Gaussian-smoothed network by Stein's lemma, the SoftPlus and vanilla baselines, P-MSE, and the
exact second-order step in a ball (trust-region subproblem)."""

from hessext.smoothhess.estimator import (
    PMSEResult,
    SmoothHessResult,
    ball_perturbations,
    pmse,
    smooth_hessian,
    softplus_hessian,
    vanilla_hessian,
)
from hessext.smoothhess.trust_region import (
    SubspaceStep,
    TrustRegionStep,
    second_order_step,
    subspace_second_order_step,
)

__all__ = [
    "smooth_hessian",
    "softplus_hessian",
    "vanilla_hessian",
    "pmse",
    "ball_perturbations",
    "second_order_step",
    "subspace_second_order_step",
    "SmoothHessResult",
    "PMSEResult",
    "TrustRegionStep",
    "SubspaceStep",
]
