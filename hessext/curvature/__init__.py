"""Curvature of the training loss: exact Hessians and GGNs assembled densely in float64
(``hessian``, ``ggn`` → ``Hessian``) and the matrix-free ``HessianOperator`` for large P."""

from hessext.curvature.hessian import Hessian, HessianOperator, NotPositiveDefiniteError
from hessext.curvature.lanczos import lanczos
from hessext.curvature.cg import block_cg

__all__ = ["Hessian", "HessianOperator", "NotPositiveDefiniteError", "lanczos", "block_cg"]
from hessext.curvature.assembly import (hessian, ggn, hessian_operator, load_strips,  # noqa: E402
                                        HessianTooLargeError)

__all__ += ["hessian", "ggn", "hessian_operator", "load_strips", "HessianTooLargeError"]
