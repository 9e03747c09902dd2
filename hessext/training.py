"""A small, seeded training loop: enough for the demos and tests, not a framework.

Reproducibility: given the same model state, data and seed, :func:`train` gives the same final
weights bit for bit on the same machine and thread count. The seed drives the per-epoch
shuffling (its own torch.Generator) and every random op inside the model (dropout), run under
a forked global RNG so that the caller's random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hessext._internal.progress import progress_bar

__all__ = ["train"]

_OPTIMIZERS = ("sgd", "adam")
_LOSSES = ("ce", "mse")
_SCHEDULES = ("constant", "cosine")


def _positive_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"train: {name} must be a positive int, got {value!r}")


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    loss: str | Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = "ce",
    lr_schedule: str = "constant",
    progress: bool | None = False,
):
    """Minibatch training of ``model`` in place.

    x: [N, ...] inputs; y: [N] int64 class labels for loss='ce' (mean cross-entropy on the
    logits), or targets of the model's output shape for loss='mse' (mean squared error), or
    whatever a callable loss(model, x_batch, y_batch) -> scalar needs (e.g. a VAE's ELBO).
    Each epoch visits every example once in a fresh seeded order; the last batch may be smaller.
    optimizer: 'sgd' (plain, no momentum: the decision-boundary study's choice, lr 0.02,
    batch 64) or 'adam'. weight_decay is the optimizer's (adds weight_decay·θ to the gradient,
    i.e. a regulariser (weight_decay/2)‖θ‖²). lr_schedule: 'constant', or 'cosine' (annealed
    from lr to 0 over all the steps, torch's CosineAnnealingLR).

    Returns (model, history) with history a list of the mean training loss of each epoch
    (averaged over the examples seen during that epoch). The model's train/eval mode is
    restored at the end.
    """
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"train: seed must be an int, got {type(seed).__name__}")
    if not (lr > 0):
        raise ValueError(f"train: lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"train: weight_decay must be >= 0, got {weight_decay}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"train: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if lr_schedule not in _SCHEDULES:
        raise ValueError(f"train: lr_schedule must be one of {_SCHEDULES}, got {lr_schedule!r}")
    if not callable(loss) and loss not in _LOSSES:
        raise ValueError(f"train: loss must be one of {_LOSSES} or a callable, got {loss!r}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"train: x and y must be non-empty with equal length, got {len(x)} and {len(y)}")
    if loss == "ce" and (y.dim() != 1 or y.dtype not in (torch.int64, torch.int32)):
        raise ValueError(
            f"train: loss='ce' needs y of shape [N] with integer labels, got {y.dtype} {tuple(y.shape)}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters")

    device = params[0].device
    x, y = x.to(device), y.to(device)
    batch_loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    if callable(loss):
        model_loss = loss
        batch_loss_of = lambda xb, yb: model_loss(model, xb, yb)
    elif loss == "ce":
        y = y.long()
        batch_loss_of = lambda xb, yb: nn.functional.cross_entropy(model(xb), yb)
    else:
        y = y.to(params[0].dtype)
        batch_loss_of = lambda xb, yb: nn.functional.mse_loss(model(xb), yb)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n_steps = epochs * -(-len(y) // batch_size)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps) if lr_schedule == "cosine" else None
    )

    order_gen = torch.Generator().manual_seed(seed)
    n = len(y)
    history: list[float] = []
    was_training = model.training
    bar = progress_bar(total=epochs, desc="train", unit="epoch", progress=progress)
    devices = [device] if device.type == "cuda" else []
    # Dropout draws from the global RNG: fork it so the run is seeded and the caller's state kept.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.train()
        try:
            for _ in range(epochs):
                perm = torch.randperm(n, generator=order_gen).to(device)
                total = torch.zeros((), dtype=torch.float64, device=device)
                for start in range(0, n, batch_size):
                    idx = perm[start : start + batch_size]
                    opt.zero_grad(set_to_none=True)
                    batch_loss = batch_loss_of(x[idx], y[idx])
                    batch_loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total += batch_loss.detach().double() * len(idx)
                history.append(float(total) / n)
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
        finally:
            bar.close()
            model.train(was_training)
    return model, history
