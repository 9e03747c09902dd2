"""hessext: exact, fast Hessian-based interpretability for PyTorch models.

Per-sample gradients, exact Hessians and their spectra, influence functions, RelatIF, RUE,
local ensembles, SmoothHess and decision-boundary analysis, on a compiled core of registered
torch ops with a pure-torch fallback that gives the same answers.
"""

from hessext._version import __version__
from hessext import _extension  # loads the compiled core (or says why not) before anything else
from hessext._buildinfo import info

__all__ = ["__version__", "info"]

from hessext import regularizers  # noqa: E402
from hessext.per_sample import (  # noqa: E402
    PerSampleGrads, kernel_layers, per_sample_grads, unflatten_params,
)

__all__ += ["regularizers", "per_sample_grads", "PerSampleGrads", "unflatten_params", "kernel_layers"]
