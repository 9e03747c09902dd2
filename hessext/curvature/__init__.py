"""Curvature of the training loss (layer 2): exact Hessians and GGNs assembled densely in
float64 (``hessian``, ``ggn`` → ``Hessian``), the matrix-free ``HessianOperator`` for large P,
and the damped solve every method shares (``SolveInfo`` says how H_δ⁻¹ was applied)."""

from hessext.curvature.assembly import ggn, hessian, hessian_operator
from hessext.curvature.cg import block_cg
from hessext.curvature.chain import GlobalMean, layer_chain
from hessext.curvature.errors import HessianTooLargeError, NotPositiveDefiniteError
from hessext.curvature.exact import Hessian, HessianOperator
from hessext.curvature.lanczos import lanczos
from hessext.curvature.solve import SolveInfo
from hessext.curvature.strips import load_strips

__all__ = [
    "hessian",
    "ggn",
    "hessian_operator",
    "Hessian",
    "HessianOperator",
    "SolveInfo",
    "NotPositiveDefiniteError",
    "HessianTooLargeError",
    "load_strips",
    "lanczos",
    "block_cg",
    "GlobalMean",
    "layer_chain",
]
