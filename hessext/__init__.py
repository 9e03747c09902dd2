"""hessext: exact, fast Hessian-based interpretability for PyTorch models.

Per-sample gradients, exact Hessians and their spectra, influence functions, RelatIF, RUE,
local ensembles, SmoothHess and decision-boundary analysis, on a compiled core of registered
torch ops with a pure-torch fallback that gives the same answers.
"""

from hessext._version import __version__
from hessext import _extension  # loads the compiled core (or says why not) before anything else
from hessext._buildinfo import info

__all__ = ["__version__", "info"]

from hessext.smoothhess import smooth_hessian, softplus_hessian, pmse  # noqa: E402
from hessext.trust_region import second_order_step  # noqa: E402

__all__ += ["smooth_hessian", "softplus_hessian", "pmse", "second_order_step"]
from hessext import curvature  # noqa: E402
from hessext.curvature import Hessian, HessianOperator  # noqa: E402

__all__ += ["curvature", "Hessian", "HessianOperator"]
from hessext.curvature.assembly import hessian, ggn, hessian_operator  # noqa: E402

__all__ += ["hessian", "ggn", "hessian_operator"]

# the Hessian toolbox: influence functions, RelatIF, RUE, local ensembles
from hessext._curvature_solve import SolveInfo
from hessext.influence import influence, relatif, self_influence, most_helpful, most_harmful
from hessext.rue import rue
from hessext.local_ensembles import extrapolation_score

__all__ += ["SolveInfo", "influence", "relatif", "self_influence", "most_helpful", "most_harmful",
            "rue", "extrapolation_score"]
from hessext import regularizers  # noqa: E402
from hessext.per_sample import (  # noqa: E402
    PerSampleGrads, kernel_layers, per_sample_grads, unflatten_params,
)

__all__ += ["regularizers", "per_sample_grads", "PerSampleGrads", "unflatten_params", "kernel_layers"]
from hessext import boundary, interpret  # noqa: E402

__all__ += ["boundary", "interpret"]
