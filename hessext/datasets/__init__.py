"""Built-in data sets, all seeded and generated locally (no downloads).

- :mod:`hessext.datasets.ssh`: disordered SSH chain images and winding labels.
- :mod:`hessext.datasets.fermions`: 12-site spinless-fermion ground states, LL vs CDW-I.
- :mod:`hessext.datasets.toy2d`: the 2-D sets of the decision-boundary study.
"""

from . import fermions, ssh, toy2d
from .fermions import ground_states, make_ll_cdw, minmax_normalise
from .ssh import critical_v, make_ssh, ssh_splits
from .toy2d import checkerboard, circles, hierarchical, moons, split, three_gaussians

__all__ = [
    "fermions",
    "ssh",
    "toy2d",
    "ground_states",
    "make_ll_cdw",
    "minmax_normalise",
    "critical_v",
    "make_ssh",
    "ssh_splits",
    "checkerboard",
    "circles",
    "hierarchical",
    "moons",
    "split",
    "three_gaussians",
]
