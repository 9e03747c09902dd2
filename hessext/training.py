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
    loss: str = "ce",
    lr_schedule: str = "constant",
    momentum: float = 0.0,
    final_lr: float | None = None,
    sample_weight: torch.Tensor | None = None,
    progress: bool | None = False,
):
    """Minibatch training of ``model`` in place.

    x: [N, ...] inputs; y: [N] int64 class labels for loss='ce' (mean cross-entropy on the
    logits), or targets of the model's output shape for loss='mse' (mean squared error).
    Each epoch visits every example once in a fresh seeded order; the last batch may be smaller.
    optimizer: 'sgd' (plain, no momentum: the decision-boundary study's choice, lr 0.02,
    batch 64) or 'adam'. weight_decay is the optimizer's (adds weight_decay·θ to the gradient,
    i.e. a regulariser (weight_decay/2)‖θ‖²). lr_schedule: 'constant', or 'cosine' (annealed
    from lr to 0 over all the steps, torch's CosineAnnealingLR). momentum: SGD's heavy-ball
    momentum (sgd only). final_lr: the learning rate decays geometrically, epoch by epoch, from
    lr (first epoch) to final_lr (last epoch), with lr_schedule='constant'; None: no decay.
    sample_weight: [N] non-negative weights w of the examples: each batch's loss is then
    Σ w_i ℓ_i / Σ w_i over its examples (a weighted mean; e.g. 1/scale⁴ for a regression whose
    relative error matters at every scale). None: the plain mean.

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
    if momentum < 0 or (momentum > 0 and optimizer != "sgd"):
        raise ValueError(f"train: momentum must be >= 0 and needs optimizer='sgd', got {momentum}")
    if final_lr is not None and not (final_lr > 0):
        raise ValueError(f"train: final_lr must be > 0 or None, got {final_lr}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"train: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if lr_schedule not in _SCHEDULES:
        raise ValueError(f"train: lr_schedule must be one of {_SCHEDULES}, got {lr_schedule!r}")
    if final_lr is not None and lr_schedule != "constant":
        raise ValueError(
            f"train: final_lr is a schedule of its own; it needs lr_schedule='constant', got {lr_schedule!r}"
        )
    if loss not in _LOSSES:
        raise ValueError(f"train: loss must be one of {_LOSSES}, got {loss!r}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"train: x and y must be non-empty with equal length, got {len(x)} and {len(y)}")
    if loss == "ce" and (y.dim() != 1 or y.dtype not in (torch.int64, torch.int32)):
        raise ValueError(
            f"train: loss='ce' needs y of shape [N] with integer labels, got {y.dtype} {tuple(y.shape)}"
        )
    if sample_weight is not None:
        sample_weight = torch.as_tensor(sample_weight)
        if sample_weight.shape != (len(x),) or not bool((sample_weight >= 0).all()):
            raise ValueError(
                f"train: sample_weight must be [{len(x)}] and non-negative, got shape "
                f"{tuple(sample_weight.shape)}"
            )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters")

    device = params[0].device
    x, y = x.to(device), y.to(device)
    # mean losses (the unweighted path, as it always was) and per-example ones [b] for weights
    if loss == "ce":
        y = y.long()
        loss_fn: Callable[..., torch.Tensor] = nn.functional.cross_entropy
    else:
        y = y.to(params[0].dtype)
        loss_fn = nn.functional.mse_loss

    def per_example(out, t):
        losses = loss_fn(out, t, reduction="none")
        return losses.reshape(len(t), -1).mean(1)

    weights = sample_weight.to(device=device, dtype=params[0].dtype) if sample_weight is not None else None
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, weight_decay=weight_decay, momentum=momentum
        )
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n_steps = epochs * -(-len(y) // batch_size)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps) if lr_schedule == "cosine" else None
    )
    # geometric decay per epoch: lr · γ^e with γ^(epochs-1) = final_lr / lr
    gamma = (final_lr / lr) ** (1.0 / max(epochs - 1, 1)) if final_lr is not None else None

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
            for epoch in range(epochs):
                if gamma is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr * gamma**epoch
                perm = torch.randperm(n, generator=order_gen).to(device)
                total = torch.zeros((), dtype=torch.float64, device=device)
                for start in range(0, n, batch_size):
                    idx = perm[start : start + batch_size]
                    opt.zero_grad(set_to_none=True)
                    out = model(x[idx])
                    if weights is None:
                        batch_loss = loss_fn(out, y[idx])
                    else:
                        w = weights[idx]
                        batch_loss = (w * per_example(out, y[idx])).sum() / w.sum().clamp_min(
                            torch.finfo(w.dtype).tiny
                        )
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
