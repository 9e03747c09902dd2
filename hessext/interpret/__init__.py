"""Interpretation of trained networks (layer 3): class activation maps (CAM, grad-CAM),
recorded activations and their PCA."""

from hessext.interpret.cam import ActivationPCA, cam, grad_cam, record_activations

__all__ = ["cam", "grad_cam", "record_activations", "ActivationPCA"]
