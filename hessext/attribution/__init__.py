"""Which training examples made a prediction (layer 3): influence functions (Koh & Liang 2017),
RelatIF (Barshan et al. 2020) and self-influence, on any curvature object; and how wrong a
curvature approximation makes them (``compare_curvature``)."""

from hessext.attribution.compare import CurvatureComparison, compare_curvature
from hessext.attribution.influence import influence, most_harmful, most_helpful, relatif, self_influence

__all__ = [
    "influence",
    "relatif",
    "self_influence",
    "most_helpful",
    "most_harmful",
    "compare_curvature",
    "CurvatureComparison",
]
