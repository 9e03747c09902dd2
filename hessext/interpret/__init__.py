"""Interpretation of trained networks (layer 3): class activation maps (CAM, grad-CAM),
recorded activations and their PCA; Siamese networks and twin regression networks (generic
training and evaluation of pair models); sparse polynomial regression of a learned quantity
on named variables; the reading of bottleneck neurons against candidate physical quantities,
and critical points from learned order parameters."""

from hessext.interpret.bottleneck import (
    BottleneckReading,
    MonotoneFit,
    monotone_fit,
    r2_score,
    read_bottleneck,
)
from hessext.interpret.cam import ActivationPCA, cam, grad_cam, record_activations
from hessext.interpret.critical import (
    BinderCollapse,
    Extrapolation,
    binder_collapse,
    binder_cumulant,
    crossing,
    extrapolate_inverse_size,
)
from hessext.interpret.siamese import siamese_accuracy, siamese_latent, train_siamese
from hessext.interpret.sparse_regression import PolynomialExpression, monomials, sparse_polynomial_fit
from hessext.interpret.twin import TwinPrediction, loop_violation, train_twin, twin_predict

__all__ = [
    "cam",
    "grad_cam",
    "record_activations",
    "ActivationPCA",
    "train_siamese",
    "siamese_accuracy",
    "siamese_latent",
    "sparse_polynomial_fit",
    "PolynomialExpression",
    "monomials",
    "train_twin",
    "twin_predict",
    "TwinPrediction",
    "loop_violation",
    "monotone_fit",
    "read_bottleneck",
    "r2_score",
    "MonotoneFit",
    "BottleneckReading",
    "binder_cumulant",
    "binder_collapse",
    "crossing",
    "extrapolate_inverse_size",
    "BinderCollapse",
    "Extrapolation",
]
