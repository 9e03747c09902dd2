"""Siamese networks: learn which observations belong together, then read the invariant off the
small latent they must pass through (Wetzel, Melko, Scott, Panju, Ganesh, PRR 2020;
docs/methods.md §9, docs/wetzel-invariants.md).

A Siamese model maps both members of a pair with the same encoder and says from the two
latents whether they belong to one object (one orbit, one field configuration seen from two
frames). Positives are related by the physics, negatives by permuting the positives, so the
only way to tell them apart is a quantity that the relation leaves unchanged: with a one- or
two-neuron latent the encoder must compute an invariant, which
:func:`hessext.interpret.sparse_polynomial_fit` then writes down.

The functions are generic: ``model(a, b)`` returns logits [N] of "same" (a and b [N, ...]),
and the latent is whatever module computes it (``model.encode`` for
:class:`hessext.models.SiameseNet`). Training changes the model in place (that is its point);
evaluation runs inside ``preserved(model)`` and leaves it exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from hessext._internal.contract import check_inputs
from hessext._internal.guard import check_model, preserved
from hessext.interpret._loop import adam_loop, check_options, check_positive_int, model_dtype

__all__ = ["train_siamese", "siamese_accuracy", "siamese_latent"]


def _check_pairs(fn: str, model: nn.Module, a, b, same) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, b [N, ...] at the model's dtype and device; same bool [N]."""
    check_model(model, fn)
    a = check_inputs(a, fn, name="a")
    b = check_inputs(b, fn, name="b")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not isinstance(same, torch.Tensor) or same.dtype != torch.bool or same.shape != (len(a),):
        got = f"{same.dtype} {tuple(same.shape)}" if isinstance(same, torch.Tensor) else type(same).__name__
        raise ValueError(f"{fn}: same must be a bool tensor [{len(a)}] marking the positive pairs, got {got}")
    dtype, device = model_dtype(model, fn)
    return a.to(device, dtype), b.to(device, dtype), same.to(device)


def train_siamese(
    model: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    same: torch.Tensor,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = False,
) -> list[float]:
    """Train the pair classifier ``model`` in place: binary cross-entropy of ``model(a, b)``
    (logits [N]) against ``same`` (bool [N]), ``epochs`` passes over the pairs in a seeded
    order, Adam with a one-cycle schedule peaking at ``lr``. a, b [N, ...] are cast to the
    model's dtype and device. Returns the loss of every step."""
    fn = "train_siamese"
    a, b, same = _check_pairs(fn, model, a, b, same)
    check_positive_int(epochs, "epochs", fn)
    check_options(fn, lr=lr, batch_size=batch_size, seed=seed)
    n = len(a)
    per_epoch = math.ceil(n / batch_size)
    target = same.to(a.dtype)
    gen = torch.Generator().manual_seed(seed)
    batches: list[torch.Tensor] = []

    def batch_loss() -> torch.Tensor:
        if not batches:  # a new epoch: a fresh seeded order, cut into batches
            batches.extend(torch.randperm(n, generator=gen).to(a.device).split(batch_size)[::-1])
        idx = batches.pop()
        return F.binary_cross_entropy_with_logits(model(a[idx], b[idx]), target[idx])

    return adam_loop(
        model,
        batch_loss,
        steps=epochs * per_epoch,
        lr=lr,
        seed=seed,
        schedule="onecycle",
        progress=progress,
        desc=fn,
    )


def _batched(fn: Callable[..., torch.Tensor], n: int, batch_size: int, *tensors) -> torch.Tensor:
    return torch.cat([fn(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def siamese_accuracy(
    model: nn.Module, a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, *, batch_size: int = 8192
) -> float:
    """The fraction of pairs whose call "same" (logit > 0) matches ``same``; the model runs in
    eval mode and comes back unchanged."""
    fn = "siamese_accuracy"
    a, b, same = _check_pairs(fn, model, a, b, same)
    check_positive_int(batch_size, "batch_size", fn)
    with preserved(model), torch.no_grad():
        logits = _batched(lambda u, v: model(u, v).reshape(-1), len(a), batch_size, a, b)
    if logits.shape != same.shape:
        raise ValueError(f"{fn}: model(a, b) must return one logit per pair [N], got {tuple(logits.shape)}")
    return float(((logits > 0) == same).double().mean())


def siamese_latent(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 8192) -> torch.Tensor:
    """The latent encoder(x) [N, k] (a 1-D output becomes [N, 1]), in eval mode without
    gradients, at the encoder's dtype; the encoder comes back unchanged. Pass the module that
    computes the latent, e.g. ``model.encoder`` of a SiameseNet."""
    fn = "siamese_latent"
    check_model(encoder, fn)
    x = check_inputs(x, fn, name="x")
    check_positive_int(batch_size, "batch_size", fn)
    dtype, device = model_dtype(encoder, fn)
    x = x.to(device, dtype)
    with preserved(encoder), torch.no_grad():
        z = _batched(lambda u: encoder(u).reshape(len(u), -1), len(x), batch_size, x)
    return z
