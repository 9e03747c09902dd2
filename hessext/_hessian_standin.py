"""TEMPORARY stand-in for hessext.hessian(model, loss_fn, data) until the builder lands on this
branch (torch.func.hessian of the mean loss in float64); delete when it does.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from hessext._model_guard import flat_parameters


def build(model, loss_fn, data, *, params=None, regularizer=None):
    names, tensors = flat_parameters(model, params)
    theta = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float64)
    shapes = [t.shape for t in tensors]
    inputs, targets = data
    model64 = model  # parameters cast per call below

    def loss(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = s.numel()
            parts[n] = flat[i:i + k].reshape(s)
            i += k
        buffers = {n: b.to(torch.float64) if b.is_floating_point() else b
                   for n, b in model64.named_buffers()}
        out = functional_call(model64, {**parts, **buffers}, (inputs.to(torch.float64),))
        value = loss_fn(out, targets)
        if regularizer is not None:
            value = value + regularizer.value(flat)
        return value

    from hessext import Hessian

    return Hessian.from_matrix(torch.func.hessian(loss)(theta))
