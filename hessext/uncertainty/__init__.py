"""How sure a model is, and whether it extrapolates (layer 3): RUE, resampling uncertainty by
one Newton step per bootstrap (Schulam & Saria 2019), and the local-ensembles extrapolation
score (Madras et al. 2020)."""

from hessext.uncertainty.local_ensembles import extrapolation_score, predicted_class_logit
from hessext.uncertainty.rue import bootstrap_counts, rue

__all__ = ["rue", "bootstrap_counts", "extrapolation_score", "predicted_class_logit"]
