"""A small, seeded training loop: enough for the demos and tests, not a framework.

Reproducibility: given the same model state, data and seed, :func:`train` gives the same final
weights bit for bit on the same machine and thread count. The seed drives the per-epoch
shuffling (its own torch.Generator) and every random op inside the model (dropout), run under
a forked global RNG so that the caller's random state is left as it was.

:func:`train_mlps` is the same training (plain SGD, mean cross-entropy) for S ReLU MLPs of one
architecture at once, with a hand-written forward and backward pass over batched matrices
[S, B, width]: no autograd graph, no optimizer, one set of kernels for all S models. For the
decision-boundary study's 2-100-100-3 network on 150 points it runs ~20x faster per model than
:func:`train` (measured in bench/bench_training.py), which is what makes the paper's 300,000
random-label epochs affordable; it follows :func:`train`'s arithmetic operation for operation
(tests check the weights against :func:`train`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hessext._internal.progress import progress_bar

__all__ = ["train", "train_mlps"]

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
    progress: bool | None = False,
):
    """Minibatch training of ``model`` in place.

    x: [N, ...] inputs; y: [N] int64 class labels for loss='ce' (mean cross-entropy on the
    logits), or targets of the model's output shape for loss='mse' (mean squared error).
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
    if loss not in _LOSSES:
        raise ValueError(f"train: loss must be one of {_LOSSES}, got {loss!r}")
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
    if loss == "ce":
        y = y.long()
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy
    else:
        y = y.to(params[0].dtype)
        loss_fn = nn.functional.mse_loss
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
                    batch_loss = loss_fn(model(x[idx]), y[idx])
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


# ---------------------------------------------------------------------------------------------
# many MLPs at once


def _mlp_layers(model: nn.Module, fn: str) -> list[nn.Linear]:
    """The Linear layers of an nn.Sequential Linear → ReLU → … → Linear (hessext.models.mlp)."""
    mods = list(model.children()) if isinstance(model, nn.Sequential) else []
    ok = bool(mods) and len(mods) % 2 == 1
    ok = ok and all(isinstance(m, nn.Linear) for m in mods[0::2])
    ok = ok and all(type(m) is nn.ReLU for m in mods[1::2])
    if not ok:
        raise ValueError(
            f"{fn}: every model must be an nn.Sequential Linear → ReLU → … → Linear "
            f"(hessext.models.mlp), got {type(model).__name__}"
        )
    layers = [m for m in mods[0::2] if isinstance(m, nn.Linear)]
    if any(m.bias is None for m in layers) or any(not p.requires_grad for p in model.parameters()):
        raise ValueError(f"{fn}: every Linear layer needs a bias and every parameter requires_grad")
    if model._forward_hooks or model._forward_pre_hooks or any(m._forward_hooks for m in mods):
        raise ValueError(f"{fn}: models with forward hooks are not supported (use train)")
    return layers


def train_mlps(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seeds: Sequence[int],
    progress: bool | None = False,
    chunk: int = 256,
) -> list[list[float]]:
    """Train S ReLU MLPs of one architecture at once, in place: model s exactly as
    ``train(models[s], x, y_s, epochs=…, lr=…, batch_size=…, seed=seeds[s])`` would (plain SGD,
    no momentum or weight decay, mean cross-entropy; the same seeded batch order), with a fused
    hand-written forward/backward over batched matrices.

    models: S nn.Sequential Linear → ReLU → … → Linear networks (hessext.models.mlp) with equal
    layer sizes, dtype and device. x: [N, D] inputs; y: [N] labels shared by all models, or
    [S, N] one row per model. seeds: S ints. chunk: epochs whose batch order is drawn and
    gathered at once. Returns the S histories (mean training loss of each epoch, as ``train``).
    The models' train/eval modes are left as they were (an MLP has no mode-dependent layer)."""
    fn = "train_mlps"
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    _positive_int(chunk, "chunk")
    if not (lr > 0):
        raise ValueError(f"{fn}: lr must be > 0, got {lr}")
    models = list(models)
    seeds = list(seeds)
    if not models or len(seeds) != len(models):
        raise ValueError(f"{fn}: need one seed per model, got {len(models)} models and {len(seeds)} seeds")
    if any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        raise TypeError(f"{fn}: seeds must be ints, got {seeds}")
    layers = [_mlp_layers(m, fn) for m in models]
    shapes = [[tuple(lin.weight.shape) for lin in ls] for ls in layers]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{fn}: all models must have the same layer sizes, got {shapes}")
    ref = layers[0][0].weight
    if any(lin.weight.dtype != ref.dtype or lin.weight.device != ref.device for ls in layers for lin in ls):
        raise ValueError(f"{fn}: all models must share one dtype and device")
    S, L = len(models), len(layers[0])
    x = torch.as_tensor(x).to(device=ref.device, dtype=ref.dtype)
    y = torch.as_tensor(y).to(ref.device)
    if x.dim() != 2 or x.shape[1] != shapes[0][0][1] or len(x) == 0:
        raise ValueError(f"{fn}: x must be [N, {shapes[0][0][1]}], got {tuple(x.shape)}")
    n = len(x)
    if y.is_floating_point() or y.shape not in ((n,), (S, n)):
        raise ValueError(
            f"{fn}: y must be integer labels [N={n}] or [S={S}, N], got {y.dtype} {tuple(y.shape)}"
        )
    Y = y.long().expand(S, n)

    # stacked parameters [S, out, in] and [S, out]; written back at the end
    W = [torch.stack([ls[l].weight.detach() for ls in layers]).contiguous() for l in range(L)]
    b = [torch.stack([ls[l].bias.detach() for ls in layers]).contiguous() for l in range(L)]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    losses = torch.zeros(epochs, S, dtype=torch.float64)
    rows = torch.arange(S, device=ref.device).unsqueeze(1)
    bar = progress_bar(total=epochs, desc="train", unit="epoch", progress=progress)
    try:
        for first in range(0, epochs, chunk):
            count = min(chunk, epochs - first)
            order = torch.stack(
                [torch.stack([torch.randperm(n, generator=g) for _ in range(count)]) for g in gens], dim=1
            ).to(ref.device)  # [count, S, n]
            X_c = x[order]  # [count, S, n, D]
            Y_c = Y[rows, order]  # [count, S, n]
            for e in range(count):
                total = torch.zeros(S, dtype=torch.float64, device=ref.device)
                for start in range(0, n, batch_size):
                    xb = X_c[e, :, start : start + batch_size]
                    yb = Y_c[e, :, start : start + batch_size].unsqueeze(-1)
                    total += _fused_step(W, b, xb, yb, lr).double() * yb.shape[1]
                losses[first + e] = total / n
            bar.update(count)
            bar.set_postfix(loss=f"{float(losses[first + count - 1].mean()):.4g}", refresh=False)
    finally:
        bar.close()
    with torch.no_grad():
        for s, ls in enumerate(layers):
            for l, lin in enumerate(ls):
                lin.weight.copy_(W[l][s])
                lin.bias.copy_(b[l][s])
    return [losses[:, s].tolist() for s in range(S)]


def _fused_step(W: list[torch.Tensor], b: list[torch.Tensor], xb, yb, lr: float) -> torch.Tensor:
    """One SGD step of mean cross-entropy for S stacked MLPs, the same operations autograd and
    torch.optim.SGD run for one model: W [S, out, in] and b [S, out] per layer (updated in
    place), xb [S, B, D], yb [S, B, 1]. Returns the S batch losses [S]."""
    acts = [xb]  # acts[l]: the input of layer l
    for l in range(len(W)):
        z = torch.baddbmm(b[l].unsqueeze(1), acts[l], W[l].transpose(1, 2))
        if l < len(W) - 1:
            acts.append(torch.relu(z))
    logp = torch.log_softmax(z, dim=-1)
    # one nll_loss per model: its sequential sum is what train's cross_entropy reports (a
    # batched reduction sums in another order and differs in the last bit)
    loss = torch.stack([F.nll_loss(logp[s], yb[s, :, 0]) for s in range(len(logp))])
    # backward of mean nll_loss(log_softmax(z)): −1/B at the targets, then log-softmax's
    # backward g − exp(logp)·Σg (the formulas of aten's nll_loss_backward and
    # _log_softmax_backward_data)
    g = torch.zeros_like(logp).scatter_(-1, yb, -1.0 / yb.shape[1])
    d = torch.ops.aten._log_softmax_backward_data(g, logp, -1, logp.dtype)
    for l in reversed(range(len(W))):
        d_in = torch.bmm(d, W[l]) if l > 0 else None  # with the weights before this step
        W[l].add_(torch.bmm(d.transpose(1, 2), acts[l]), alpha=-lr)
        b[l].add_(d.sum(dim=1), alpha=-lr)
        if d_in is not None:
            d = torch.ops.aten.threshold_backward(d_in, acts[l], 0)
    return loss
