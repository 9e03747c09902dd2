"""Per-example gradients (layer 1): the N×P matrix G, row i = ∇θ ℓ(z_i) (+ ∇R(θ)), computed
in one forward and one backward pass, and the lazy operator whose products never form it."""

from hessext._internal.params import unflatten_params
from hessext.per_sample.capture import kernel_layers
from hessext.per_sample.matrix import PerSampleGrads, per_sample_grads

__all__ = ["per_sample_grads", "PerSampleGrads", "unflatten_params", "kernel_layers"]
