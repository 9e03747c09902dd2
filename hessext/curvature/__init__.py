"""Curvature of the training loss (layer 2): exact Hessians and GGNs assembled densely in
float64 (``hessian``, ``ggn`` → ``Hessian``), the matrix-free ``HessianOperator`` for large P,
structured approximations behind the same interface (``kfac``, ``ekfac``, ``diag_ggn``,
``hutchinson_diagonal``; docs/structured-curvature.md), the spectral density by stochastic
Lanczos quadrature, and the damped solve every method shares (``SolveInfo`` says how H_δ⁻¹ was
applied)."""

from hessext.curvature.assembly import ggn, hessian, hessian_operator
from hessext.curvature.cg import block_cg
from hessext.curvature.chain import GlobalMean, layer_chain
from hessext.curvature.density import SpectralDensity, spectral_density
from hessext.curvature.diagonal import DiagonalCurvature, diag_ggn, hutchinson_diagonal
from hessext.curvature.errors import HessianTooLargeError, NotPositiveDefiniteError
from hessext.curvature.exact import Hessian, HessianOperator
from hessext.curvature.kfac import KFAC, KroneckerBlock, ekfac, kfac, last_layer
from hessext.curvature.lanczos import lanczos
from hessext.curvature.lowrank import RangeEigh, range_eigh
from hessext.curvature.solve import SolveInfo
from hessext.curvature.strips import load_strips
from hessext.curvature.structured import StructuredCurvature

__all__ = [
    # exact
    "hessian",
    "ggn",
    "hessian_operator",
    "Hessian",
    "HessianOperator",
    # structured approximations
    "kfac",
    "ekfac",
    "diag_ggn",
    "hutchinson_diagonal",
    "last_layer",
    "KFAC",
    "KroneckerBlock",
    "DiagonalCurvature",
    "StructuredCurvature",
    # spectra
    "spectral_density",
    "SpectralDensity",
    # solves and errors
    "SolveInfo",
    "NotPositiveDefiniteError",
    "HessianTooLargeError",
    "load_strips",
    "lanczos",
    "range_eigh",
    "RangeEigh",
    "block_cg",
    "GlobalMean",
    "layer_chain",
]
