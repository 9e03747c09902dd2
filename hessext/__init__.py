"""hessext: exact, fast Hessian-based interpretability for PyTorch models.

Per-sample gradients, exact Hessians and their spectra, influence functions, RelatIF, RUE,
local ensembles, SmoothHess, decision-boundary analysis and the interpretation of physics
networks, on a compiled core of registered torch ops with a pure-torch fallback that gives the
same answers. The layers (docs/architecture.md): ops → per_sample → curvature → methods →
studies; this facade re-exports the public names and nothing inside the package imports it.
"""

from hessext import (
    _extension,  # noqa: F401  (loads the compiled core, or says why not, before anything else)
    attribution,
    boundary,
    curvature,
    datasets,
    interpret,
    models,
    ops,
    regularizers,
    smoothhess,
    training,
    uncertainty,
)
from hessext._buildinfo import info
from hessext._version import __version__
from hessext.attribution import (
    compare_curvature,
    influence,
    most_harmful,
    most_helpful,
    relatif,
    self_influence,
)
from hessext.curvature import (
    KFAC,
    DiagonalCurvature,
    Hessian,
    HessianOperator,
    HessianTooLargeError,
    NotPositiveDefiniteError,
    SolveInfo,
    diag_ggn,
    ekfac,
    ggn,
    hessian,
    hessian_operator,
    hutchinson_diagonal,
    kfac,
    last_layer,
    spectral_density,
)
from hessext.ops import ising_sweeps
from hessext.per_sample import PerSampleGrads, kernel_layers, per_sample_grads, unflatten_params
from hessext.smoothhess import pmse, second_order_step, smooth_hessian, softplus_hessian
from hessext.uncertainty import extrapolation_score, rue

__all__ = [
    # build
    "__version__",
    "info",
    # per-example gradients
    "per_sample_grads",
    "PerSampleGrads",
    "unflatten_params",
    "kernel_layers",
    # curvature
    "hessian",
    "ggn",
    "hessian_operator",
    "Hessian",
    "HessianOperator",
    "SolveInfo",
    # structured curvature and spectra
    "kfac",
    "ekfac",
    "diag_ggn",
    "hutchinson_diagonal",
    "last_layer",
    "KFAC",
    "DiagonalCurvature",
    "spectral_density",
    "NotPositiveDefiniteError",
    "HessianTooLargeError",
    # attribution
    "influence",
    "relatif",
    "self_influence",
    "most_helpful",
    "most_harmful",
    "compare_curvature",
    # uncertainty and extrapolation
    "rue",
    "extrapolation_score",
    # feature interactions
    "smooth_hessian",
    "softplus_hessian",
    "pmse",
    "second_order_step",
    # physics data
    "ising_sweeps",
    # submodules
    "ops",
    "regularizers",
    "curvature",
    "attribution",
    "uncertainty",
    "smoothhess",
    "boundary",
    "interpret",
    "datasets",
    "models",
    "training",
]
