"""Per-example gradients as the toolbox methods need them.

Training gradients go through the per-sample gradient engine (hessext.per_sample_grads /
hessext.PerSampleGrads): the methods only ever need products with G (``G @ V``, ``Gᵀ W``), so
they ask for those and never hold the n×P matrix when the engine can avoid it. Test-side
gradients (a few dozen rows) are materialised.

Loss convention (as hessext.hessian): ``loss_fn(outputs, targets)`` returns per-example losses
[N] (reduction='none') or a mean/sum-reduced scalar, which is then evaluated one example at a
time (either way that example's loss).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import vmap

from hessext._model_guard import flat_parameters
from hessext.per_sample import PerSampleGrads, per_sample_grads


def split_data(data, name: str, *, need_targets: bool):
    """(inputs, targets) from ``data``: a pair (inputs, targets) or, when labels are not
    needed, a bare inputs tensor (targets None)."""
    if isinstance(data, torch.Tensor):
        if need_targets:
            raise ValueError(f"{name}: expected a pair (inputs, targets); got a bare tensor "
                             f"of shape {tuple(data.shape)} and this option needs the labels")
        inputs, targets = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        inputs, targets = data
    else:
        raise TypeError(f"{name}: expected (inputs, targets) or an inputs tensor, got {type(data).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise TypeError(f"{name}: inputs must be a tensor with a leading sample axis")
    if targets is not None:
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"{name}: targets must be a tensor, got {type(targets).__name__}")
        if targets.dim() == 0 or targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"{name}: inputs have {inputs.shape[0]} samples but targets have shape "
                             f"{tuple(targets.shape)}")
    if inputs.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise ValueError(f"{name}: inputs contain non-finite values")
    if need_targets and targets is None:
        raise ValueError(f"{name}: this option needs the labels; pass (inputs, targets)")
    return inputs, targets


def per_example_loss(loss_fn: Callable, outputs: torch.Tensor, targets: torch.Tensor) -> Callable:
    """A loss function returning per-example losses [N] for these outputs/targets (probed once)."""
    with torch.no_grad():
        probe = loss_fn(outputs, targets)
    if not isinstance(probe, torch.Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(probe).__name__}")
    if probe.dim() == 0:
        one = lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)).reshape(())
        return lambda o, t: vmap(one)(o, t)
    if probe.shape != (outputs.shape[0],):
        raise ValueError(f"loss_fn must return per-example losses [N] = [{outputs.shape[0]}] "
                         f"(reduction='none') or a reduced scalar, got shape {tuple(probe.shape)}")
    return loss_fn


def _per_example_loss_for(model, loss_fn, inputs, targets):
    with torch.no_grad():
        outputs = model(inputs[:2])
    return per_example_loss(loss_fn, outputs, targets[:2])


def per_example_loss_grads(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                           targets: torch.Tensor, *, params=None, regularizer=None) -> torch.Tensor:
    """[N, P] rows ∇θ ℓ(z_i) (+ ∇R(θ) when ``regularizer``), named_parameters() order."""
    return per_sample_grads(model, _per_example_loss_for(model, loss_fn, inputs, targets), inputs,
                            targets, params=params, regularizer=regularizer)


def per_example_output_grads(model: nn.Module, inputs: torch.Tensor, output_fn: Callable,
                             *, params=None) -> torch.Tensor:
    """[N, P] rows ∇θ s(x_i) of the scalar prediction s = output_fn(model(x_i)) (one example's
    output, batch axis removed): the engine's per-sample gradients of the "loss" s."""

    def one(o):
        value = output_fn(o)
        if value.numel() != 1:
            raise ValueError("output_fn must map one example's output to a scalar, got shape "
                             f"{tuple(value.shape)}")
        return value.reshape(())

    scalar_loss = lambda outputs, _targets: vmap(one)(outputs)
    unused_targets = torch.zeros(inputs.shape[0], device=inputs.device)
    return per_sample_grads(model, scalar_loss, inputs, unused_targets, params=params)


def train_grads(model, loss_fn, inputs, targets, *, params=None, regularizer=None,
                progress=None) -> PerSampleGrads:
    """The training-gradient matrix G [N, P] as the lazy hessext.PerSampleGrads (``G @ V``
    [N, k], ``G.T @ W`` [P, k] by ghost products where the layers allow)."""
    return PerSampleGrads(model, _per_example_loss_for(model, loss_fn, inputs, targets), inputs,
                          targets, params=params, regularizer=regularizer, progress=progress)


def times(G, V: torch.Tensor) -> torch.Tensor:
    """G @ V in float64: [N, P] · [P, k] → [N, k]."""
    if isinstance(G, torch.Tensor):
        return G.to(torch.float64) @ V.to(device=G.device, dtype=torch.float64)
    return (G @ V.to(torch.float64)).to(torch.float64)


def transpose_times(G, W: torch.Tensor) -> torch.Tensor:
    """Gᵀ W in float64: [N, k] → [P, k]."""
    if isinstance(G, torch.Tensor):
        return G.to(torch.float64).T @ W.to(device=G.device, dtype=torch.float64)
    return (G.T @ W.to(torch.float64)).to(torch.float64)


def num_params(model, params) -> int:
    return sum(t.numel() for t in flat_parameters(model, params)[1])
