"""Per-example gradients as the toolbox methods need them.

Training gradients go through the per-sample gradient engine (hessext.per_sample_grads /
hessext.PerSampleGrads): the methods only ever need products with G (``G @ V``, ``Gᵀ W``), so
they ask for those and never hold the n×P matrix when the engine can avoid it. Test-side
gradients (a few dozen rows) are materialised.

The temporary fallback below (torch.func vmap(grad)) serves until the engine lands on main;
then these functions only delegate.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from hessext._model_guard import flat_parameters


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


def _functional(model: nn.Module, params):
    names, tensors = flat_parameters(model, params)
    detached = {n: t.detach() for n, t in zip(names, tensors)}
    return names, detached


def _flatten(grads: dict, names: Sequence[str], n: int) -> torch.Tensor:
    return torch.cat([grads[k].reshape(n, -1) for k in names], dim=1)


def per_example_loss_grads(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor,
                           targets: torch.Tensor, *, params=None, regularizer=None,
                           batch_size: int = 256) -> torch.Tensor:
    """[N, P] rows ∇θ ℓ(z_i) (+ ∇R(θ) when ``regularizer``), named_parameters() order."""
    engine = _engine()
    if engine is not None:
        return engine.per_sample_grads(model, loss_fn, inputs, targets, params=params,
                                       regularizer=regularizer)
    names, theta = _functional(model, params)

    def one_loss(p, x, t):
        return loss_fn(functional_call(model, p, (x.unsqueeze(0),)), t.unsqueeze(0))

    rows = []
    for start in range(0, inputs.shape[0], batch_size):
        x, t = inputs[start:start + batch_size], targets[start:start + batch_size]
        g = vmap(grad(one_loss), in_dims=(None, 0, 0))(theta, x, t)
        rows.append(_flatten(g, names, x.shape[0]))
    G = torch.cat(rows)
    if regularizer is not None:
        flat = torch.cat([theta[k].reshape(-1) for k in names])
        G = G + regularizer.grad(flat)
    return G


def per_example_output_grads(model: nn.Module, inputs: torch.Tensor, output_fn: Callable,
                             *, params=None, batch_size: int = 256) -> torch.Tensor:
    """[N, P] rows ∇θ s(x_i) of the scalar prediction s = output_fn(model(x_i)) (one example's
    output, batch axis removed)."""
    names, theta = _functional(model, params)

    def one_output(p, x):
        out = output_fn(functional_call(model, p, (x.unsqueeze(0),)).squeeze(0))
        if out.numel() != 1:
            raise ValueError("output_fn must map one example's output to a scalar, got shape "
                             f"{tuple(out.shape)}")
        return out.reshape(())

    rows = []
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start:start + batch_size]
        g = vmap(grad(one_output), in_dims=(None, 0))(theta, x)
        rows.append(_flatten(g, names, x.shape[0]))
    return torch.cat(rows)


def train_grads(model, loss_fn, inputs, targets, *, params=None, regularizer=None):
    """The training-gradient matrix G [N, P] as a linear operator supporting ``G @ V`` [N, k]
    and ``G.T @ W`` [P, k] (the lazy hessext.PerSampleGrads when available)."""
    engine = _engine()
    if engine is not None and hasattr(engine, "PerSampleGrads"):
        return engine.PerSampleGrads(model, loss_fn, inputs, targets, params=params,
                                     regularizer=regularizer)
    return per_example_loss_grads(model, loss_fn, inputs, targets, params=params,
                                  regularizer=regularizer)


def _engine():
    """The hessext module when it has the per-sample gradient engine, else None."""
    import hessext

    return hessext if hasattr(hessext, "per_sample_grads") else None


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
