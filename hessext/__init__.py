"""hessext: exact, fast Hessian-based interpretability for PyTorch models.

Per-sample gradients, exact Hessians and their spectra, influence functions, RelatIF, RUE,
local ensembles, SmoothHess and decision-boundary analysis, on a compiled core of registered
torch ops with a pure-torch fallback that gives the same answers.

Exports follow the layers (DESIGN.md): build information, curvature objects, the toolbox
methods, then the submodules for boundary analysis, interpretation, data and models.
"""

from hessext._version import __version__
from hessext import _extension  # loads the compiled core (or says why not) before anything else
from hessext._buildinfo import info

# curvature objects
from hessext import regularizers
from hessext.per_sample import PerSampleGrads, kernel_layers, per_sample_grads, unflatten_params
from hessext import curvature
from hessext.curvature import Hessian, HessianOperator
from hessext.curvature.assembly import ggn, hessian, hessian_operator

# the toolbox: influence functions, RelatIF, RUE, local ensembles, SmoothHess
from hessext._curvature_solve import SolveInfo
from hessext.influence import influence, most_harmful, most_helpful, relatif, self_influence
from hessext.rue import rue
from hessext.local_ensembles import extrapolation_score
from hessext.smoothhess import pmse, smooth_hessian, softplus_hessian
from hessext.trust_region import second_order_step

# decision boundary and interpretation
from hessext import boundary, interpret

__all__ = [
    "__version__", "info",
    "regularizers", "per_sample_grads", "PerSampleGrads", "unflatten_params", "kernel_layers",
    "curvature", "Hessian", "HessianOperator", "hessian", "ggn", "hessian_operator",
    "SolveInfo", "influence", "relatif", "self_influence", "most_helpful", "most_harmful",
    "rue", "extrapolation_score",
    "smooth_hessian", "softplus_hessian", "pmse", "second_order_step",
    "boundary", "interpret",
]
