"""Built-in data sets, all seeded and generated locally (no downloads).

- :mod:`hessext.datasets.ssh`: disordered SSH chain images and winding labels.
- :mod:`hessext.datasets.fermions`: 12-site spinless-fermion ground states, LL vs CDW-I.
- :mod:`hessext.datasets.toy2d`: the low-dimensional sets of the decision-boundary study.
- :mod:`hessext.datasets.digits`: its image set (digits 0/1/7: built-in 8×8 digits, or MNIST
  from a user-supplied file).
- :mod:`hessext.datasets.kepler`: Kepler orbits (symplectic integrator), pairs of states on
  one orbit.
- :mod:`hessext.datasets.lorentz`: electromagnetic fields under Lorentz transformations, pairs
  of one field seen from two frames.
- :mod:`hessext.datasets.regression1d`: a 1-D regression problem with an extrapolation region.
- :mod:`hessext.datasets.four_quadrant`: SmoothHess's four-quadrant function and its
  smoothed Hessian at the origin in closed form.
- :mod:`hessext.datasets.images`: 8×8 digits (bundled with scikit-learn) or the user's
  MNIST/FMNIST file, for the SmoothHess P-MSE and attack.
- :mod:`hessext.datasets.ising2d` (:func:`ising`): 2-D Ising Monte Carlo configurations and
  Onsager's exact results.
"""

from . import digits, fermions, four_quadrant, images, ising2d, kepler, lorentz, regression1d, ssh, toy2d
from .digits import digits017, mnist017
from .fermions import ground_states, make_ll_cdw, minmax_normalise
from .ising2d import IsingSamples, ising
from .kepler import central_potential_pairs, integrate_kepler, kepler_invariants
from .lorentz import field_invariants, lorentz_pairs
from .regression1d import regression_1d, regression_1d_function
from .ssh import critical_v, make_ssh, ssh_splits
from .toy2d import (
    checkerboard,
    circles,
    hierarchical,
    intro1d,
    moons,
    permuted_labels,
    split,
    three_gaussians,
)

__all__ = [
    "digits",
    "fermions",
    "four_quadrant",
    "images",
    "ssh",
    "toy2d",
    "kepler",
    "lorentz",
    "regression1d",
    "central_potential_pairs",
    "integrate_kepler",
    "kepler_invariants",
    "lorentz_pairs",
    "field_invariants",
    "regression_1d",
    "regression_1d_function",
    "ising2d",
    "ising",
    "IsingSamples",
    "digits017",
    "mnist017",
    "ground_states",
    "make_ll_cdw",
    "minmax_normalise",
    "critical_v",
    "make_ssh",
    "ssh_splits",
    "checkerboard",
    "circles",
    "hierarchical",
    "intro1d",
    "moons",
    "permuted_labels",
    "split",
    "three_gaussians",
]
