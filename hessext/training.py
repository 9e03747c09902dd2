"""A small, seeded training loop: enough for the demos and studies, not a framework.

- :func:`train`: a fixed number of epochs of minibatch SGD (optionally with momentum) or Adam.
- :func:`fit`: the same loop driven by a :class:`Recipe` (optimizer, learning rate, momentum,
  weight decay, batch size, an epoch cap) with a validation set and an optional
  :class:`PlateauStop` early-stopping rule; returns a :class:`TrainingLog`.

Reproducibility: given the same model state, data and seed, both give the same final weights
bit for bit on the same machine and thread count. The seed drives the per-epoch shuffling (its
own torch.Generator) and every random op inside the model (dropout), run under a forked global
RNG so that the caller's random state is left as it was.

:func:`train_mlps` is the same training (plain SGD, mean cross-entropy) for S ReLU MLPs of one
architecture at once, with a hand-written forward and backward pass over batched matrices
[S, B, width]: no autograd graph, no optimizer, one set of kernels for all S models (5-6x
less CPU per model than :func:`train` for three 2-30-30-3 networks, bench/bench_boundary.py;
docs/boundary-paper.md), which is what makes the paper's 300,000 random-label epochs affordable;
it follows :func:`train`'s arithmetic operation for operation (tests check the weights against :func:`train`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hessext._internal.progress import progress_bar

__all__ = ["train", "train_mlps", "fit", "Recipe", "PlateauStop", "TrainingLog"]

_OPTIMIZERS = ("sgd", "adam")
_LOSSES = ("ce", "mse")
_SCHEDULES = ("constant", "cosine")


def _positive_int(value, name, fn="train"):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PlateauStop:
    """Early stopping on a plateau of the validation loss (Cybiński et al.'s ``EarlyStopper``).

    After the validation loss of epoch e (0-based) is known: if it is a new minimum, go on;
    otherwise, once e >= warmup, stop when each of the last ``patience`` validation losses lies
    within ``tolerance`` of the minimum so far. It does not restore the best weights (neither
    did the original): the model is the one of the last epoch run.
    """

    patience: int = 10
    tolerance: float = 0.005
    warmup: int = 100

    def __post_init__(self):
        _positive_int(self.patience, "patience", "PlateauStop")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ValueError(f"PlateauStop: tolerance must be finite and >= 0, got {self.tolerance!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or self.warmup < 0:
            raise ValueError(f"PlateauStop: warmup must be an int >= 0, got {self.warmup!r}")

    def should_stop(self, val_losses: list[float]) -> bool:
        """Whether to stop after the epoch whose validation loss is ``val_losses[-1]``."""
        epoch = len(val_losses) - 1
        best_before = min(val_losses[:-1], default=math.inf)
        if val_losses[-1] < best_before or epoch < self.warmup:
            return False
        best = min(val_losses)
        return all(loss - best <= self.tolerance for loss in val_losses[-self.patience :])


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: the optimizer and its settings, the batch size, at most ``max_epochs``
    epochs, and an optional early-stopping rule (needs a validation set). weight_decay is the
    optimizer's (adds weight_decay·θ to the gradient, i.e. a regulariser (weight_decay/2)‖θ‖²);
    momentum is SGD's (heavy ball, PyTorch's convention, no dampening)."""

    lr: float
    batch_size: int
    max_epochs: int
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss: str = "ce"
    early_stopping: PlateauStop | None = None

    def __post_init__(self):
        _check_settings(
            "Recipe",
            self.max_epochs,
            self.batch_size,
            self.lr,
            self.weight_decay,
            self.momentum,
            self.optimizer,
            self.loss,
            epochs_name="max_epochs",
        )

    def replace(self, **changes) -> Recipe:
        """A copy with some settings changed (e.g. a reduced protocol's max_epochs)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class TrainingLog:
    """What :func:`fit` did: per-epoch mean training loss (over the examples seen in the epoch)
    and validation loss (exact mean over the validation set, eval mode), the epochs run, and
    whether the early-stopping rule ended the run before max_epochs."""

    train_loss: list[float]
    val_loss: list[float]
    epochs: int
    stopped_early: bool


def _check_settings(
    fn, epochs, batch_size, lr, weight_decay, momentum, optimizer, loss, *, epochs_name="epochs"
):
    _positive_int(epochs, epochs_name, fn)
    _positive_int(batch_size, "batch_size", fn)
    if not (lr > 0):
        raise ValueError(f"{fn}: lr must be > 0, got {lr}")
    if not (weight_decay >= 0):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {weight_decay}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"{fn}: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if not (0 <= momentum < 1):
        raise ValueError(f"{fn}: momentum must be in [0, 1), got {momentum}")
    if momentum and optimizer != "sgd":
        raise ValueError(f"{fn}: momentum is SGD's; optimizer={optimizer!r} takes none")
    if not callable(loss) and loss not in _LOSSES:
        allowed = f"{_LOSSES} or a callable loss(model, x, y)" if fn == "train" else str(_LOSSES)
        raise ValueError(f"{fn}: loss must be one of {allowed}, got {loss!r}")
    if callable(loss) and fn != "train":
        raise ValueError(f"{fn}: loss must be one of {_LOSSES}, got a callable")


def _prepare(fn, model, x, y, loss):
    """(params, x, y, loss_fn) on the parameters' device, after checking the data. loss_fn is
    the torch loss (it takes ``reduction=``), or the caller's loss(model, x, y) itself."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{fn}: x and y must be non-empty with equal length, got {len(x)} and {len(y)}")
    if isinstance(loss, str) and loss == "ce" and (y.dim() != 1 or y.dtype not in (torch.int64, torch.int32)):
        raise ValueError(
            f"{fn}: loss='ce' needs y of shape [N] with integer labels, got {y.dtype} {tuple(y.shape)}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{fn}: the model has no trainable parameters")
    device = params[0].device
    x, y = x.to(device), y.to(device)
    loss_fn: Callable[..., torch.Tensor]
    if callable(loss):
        loss_fn = loss
    elif loss == "ce":
        y = y.long()
        loss_fn = nn.functional.cross_entropy
    else:
        y = y.to(params[0].dtype)
        loss_fn = nn.functional.mse_loss
    return params, x, y, loss_fn


def _run(
    model,
    n,
    *,
    params,
    batch_loss,
    epochs,
    lr,
    batch_size,
    seed,
    optimizer,
    momentum,
    weight_decay,
    progress,
    lr_schedule="constant",
    final_lr=None,
    after_epoch=None,
):
    """The loop shared by train and fit over n examples: ``batch_loss(idx)`` is the scalar loss
    of the examples idx [b]. Returns the per-epoch training losses. ``after_epoch`` (called with
    the model in train mode after each epoch) returns True to stop."""
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n_steps = epochs * -(-n // batch_size)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps) if lr_schedule == "cosine" else None
    )
    # geometric decay per epoch: lr · γ^e with γ^(epochs-1) = final_lr / lr
    gamma = (final_lr / lr) ** (1.0 / max(epochs - 1, 1)) if final_lr is not None else None
    device = params[0].device
    order_gen = torch.Generator().manual_seed(seed)
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
                    loss = batch_loss(idx)
                    loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total += loss.detach().double() * len(idx)
                history.append(float(total) / n)
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
                if after_epoch is not None and after_epoch():
                    break
        finally:
            bar.close()
            model.train(was_training)
    return history


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
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss: str | Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = "ce",
    lr_schedule: str = "constant",
    final_lr: float | None = None,
    sample_weight: torch.Tensor | None = None,
    progress: bool | None = False,
):
    """Minibatch training of ``model`` in place for exactly ``epochs`` epochs.

    x: [N, ...] inputs; y: [N] int64 class labels for loss='ce' (mean cross-entropy on the
    logits), or targets of the model's output shape for loss='mse' (mean squared error), or
    whatever a callable loss(model, x_batch, y_batch) -> scalar needs (e.g. a VAE's ELBO).
    Each epoch visits every example once in a fresh seeded order; the last batch may be smaller.
    optimizer: 'sgd' (plain by default: the decision-boundary study's choice, lr 0.02, batch 64;
    ``momentum`` > 0 gives heavy-ball SGD) or 'adam'. weight_decay is the optimizer's (adds
    weight_decay·θ to the gradient, i.e. a regulariser (weight_decay/2)‖θ‖²). lr_schedule:
    'constant', or 'cosine' (annealed from lr to 0 over all the steps, torch's
    CosineAnnealingLR). final_lr: the learning rate decays geometrically, epoch by epoch, from lr
    (first epoch) to final_lr (last epoch), with lr_schedule='constant'; None: no decay.
    sample_weight: [N] non-negative weights w of the examples (loss 'ce' or 'mse'): each batch's
    loss is then Σ w_i ℓ_i / Σ w_i over its examples (a weighted mean; e.g. 1/scale⁴ for a
    regression whose relative error matters at every scale). None: the plain mean.

    Returns (model, history) with history a list of the mean training loss of each epoch
    (averaged over the examples seen during that epoch). The model's train/eval mode is
    restored at the end.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"train: seed must be an int, got {type(seed).__name__}")
    _check_settings("train", epochs, batch_size, lr, weight_decay, momentum, optimizer, loss)
    if lr_schedule not in _SCHEDULES:
        raise ValueError(f"train: lr_schedule must be one of {_SCHEDULES}, got {lr_schedule!r}")
    if final_lr is not None and not (final_lr > 0):
        raise ValueError(f"train: final_lr must be > 0 or None, got {final_lr}")
    if final_lr is not None and lr_schedule != "constant":
        raise ValueError(
            f"train: final_lr is a schedule of its own; it needs lr_schedule='constant', got {lr_schedule!r}"
        )
    params, x, y, loss_fn = _prepare("train", model, x, y, loss)
    if sample_weight is not None:
        if callable(loss):
            raise ValueError("train: sample_weight needs loss 'ce' or 'mse', got a callable loss")
        sample_weight = torch.as_tensor(sample_weight)
        if sample_weight.shape != (len(x),) or not bool((sample_weight >= 0).all()):
            raise ValueError(
                f"train: sample_weight must be [{len(x)}] and non-negative, got shape "
                f"{tuple(sample_weight.shape)}"
            )
        weights = sample_weight.to(device=x.device, dtype=params[0].dtype)

        def batch_loss(idx):
            per_example = loss_fn(model(x[idx]), y[idx], reduction="none").reshape(len(idx), -1).mean(1)
            w = weights[idx]
            return (w * per_example).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    elif callable(loss):
        batch_loss = lambda idx: loss_fn(model, x[idx], y[idx])
    else:
        batch_loss = lambda idx: loss_fn(model(x[idx]), y[idx])
    history = _run(
        model,
        len(y),
        params=params,
        batch_loss=batch_loss,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        progress=progress,
        lr_schedule=lr_schedule,
        final_lr=final_lr,
    )
    return model, history


def _mean_loss(model, loss_fn, x, y, batch_size) -> float:
    """The exact mean loss over (x, y) in eval mode (sum of per-example losses / N)."""
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for s in range(0, len(y), batch_size):
                out = model(x[s : s + batch_size])
                total += float(loss_fn(out, y[s : s + batch_size], reduction="sum"))
    finally:
        model.train(was_training)
    return total / len(y)


def fit(
    model: nn.Module,
    recipe: Recipe,
    train_data: tuple[torch.Tensor, torch.Tensor],
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    seed: int,
    eval_batch_size: int = 1024,
    progress: bool | None = False,
) -> tuple[nn.Module, TrainingLog]:
    """Train ``model`` in place by ``recipe``: at most recipe.max_epochs epochs, each followed by
    the validation loss (when ``val_data`` is given) and the recipe's early-stopping rule.

    train_data, val_data: (x [N, ...], y [N]) as for :func:`train`. A recipe with
    early_stopping needs val_data. Returns (model, TrainingLog)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"fit: recipe must be a hessext.training.Recipe, got {type(recipe).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"fit: seed must be an int, got {type(seed).__name__}")
    _positive_int(eval_batch_size, "eval_batch_size", "fit")
    if recipe.early_stopping is not None and val_data is None:
        raise ValueError("fit: the recipe's early stopping needs val_data")
    params, x, y, loss_fn = _prepare("fit", model, *train_data, recipe.loss)
    val_loss: list[float] = []
    after_epoch = None
    if val_data is not None:
        _, xv, yv, _ = _prepare("fit: val_data", model, *val_data, recipe.loss)
        stop = recipe.early_stopping

        def after_epoch() -> bool:
            val_loss.append(_mean_loss(model, loss_fn, xv, yv, eval_batch_size))
            return stop is not None and stop.should_stop(val_loss)

    history = _run(
        model,
        len(y),
        params=params,
        batch_loss=lambda idx: loss_fn(model(x[idx]), y[idx]),
        epochs=recipe.max_epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=seed,
        optimizer=recipe.optimizer,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        progress=progress,
        after_epoch=after_epoch,
    )
    log = TrainingLog(
        train_loss=history,
        val_loss=val_loss,
        epochs=len(history),
        stopped_early=len(history) < recipe.max_epochs,
    )
    return model, log


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
    _positive_int(epochs, "epochs", "train_mlps")
    _positive_int(batch_size, "batch_size", "train_mlps")
    _positive_int(chunk, "chunk", "train_mlps")
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
