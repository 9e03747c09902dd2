"""Per-example gradients as the toolbox methods need them.

Training gradients go through the per-sample gradient engine (``PerSampleGrads``): the methods
only ever need products with G (``G @ V``, ``Gᵀ W``), so they ask for those and never hold the
n×P matrix when the engine can avoid it. Test-side gradients (a few dozen rows) are
materialised. The loss is held to the contract of hessext/_internal/contract.py (per-example
losses, or a verified mean/sum-reduced scalar evaluated one example at a time).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import vmap

from hessext._internal.contract import ExampleLoss, example_loss
from hessext.per_sample.matrix import PerSampleGrads, per_sample_grads


def checked_loss(
    model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor, who: str
) -> ExampleLoss:
    """``loss_fn`` checked against the contract on the model's outputs for two examples."""
    with torch.no_grad():
        outputs = model(inputs[:2].clone())  # a model may write its input in place
    return example_loss(model, loss_fn, outputs, targets[:2], who)


def per_example_loss_grads(
    model: nn.Module,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    params=None,
    regularizer=None,
    who: str = "per_example_loss_grads",
) -> torch.Tensor:
    """[N, P] rows ∇θ ℓ(z_i) (+ ∇R(θ) when ``regularizer``), named_parameters() order."""
    loss = checked_loss(model, loss_fn, inputs, targets, who)
    return per_sample_grads(model, loss, inputs, targets, params=params, regularizer=regularizer)


def per_example_output_grads(
    model: nn.Module, inputs: torch.Tensor, output_fn: Callable, *, params=None
) -> torch.Tensor:
    """[N, P] rows ∇θ s(x_i) of the scalar prediction s = output_fn(model(x_i)) (one example's
    output, batch axis removed): the engine's per-sample gradients of the "loss" s."""

    def one(o):
        value = output_fn(o)
        if value.numel() != 1:
            raise ValueError(
                f"output_fn must map one example's output to a scalar, got shape {tuple(value.shape)}"
            )
        return value.reshape(())

    scalar_loss = lambda outputs, _targets: vmap(one)(outputs)  # noqa: E731
    unused_targets = torch.zeros(inputs.shape[0], device=inputs.device)
    return per_sample_grads(model, scalar_loss, inputs, unused_targets, params=params)


def train_grads(
    model, loss_fn, inputs, targets, *, params=None, regularizer=None, progress=None, who: str = "train_grads"
) -> PerSampleGrads:
    """The training-gradient matrix G [N, P] as the lazy PerSampleGrads (``G @ V`` [N, k],
    ``G.T @ W`` [P, k] by ghost products where the layers allow)."""
    loss = checked_loss(model, loss_fn, inputs, targets, who)
    return PerSampleGrads(
        model, loss, inputs, targets, params=params, regularizer=regularizer, progress=progress
    )


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
