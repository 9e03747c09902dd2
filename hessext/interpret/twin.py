"""Twin neural network regression (Wetzel, Ryczko, Melko, Tamblyn 2022;
docs/methods.md §9, docs/wetzel-invariants.md).

A twin network F(x₁, x₂) is trained to predict the difference y₁ − y₂ of two targets. The
prediction for a new x uses every training point (x_i, y_i) as an anchor, both ways round:

    ŷ(x) = 1/(2n) Σ_i [ (F(x, x_i) + y_i) + (y_i − F(x_i, x)) ],

an ensemble of 2n predictions from one network, whose standard deviation is the uncertainty.
Differences around any loop sum to zero, F(a, b) + F(b, c) + F(c, a) = 0, which is a training
signal that needs no labels: the loop term may draw its points from unlabelled inputs as well
(semi-supervised), and its violation is a further sign of extrapolation.

The functions are generic: ``model(x1, x2)`` returns F [N] (or [N, 1]) for x1, x2 [N, ...]
(e.g. :class:`hessext.models.TwinNet`). Training changes the model in place; prediction runs
inside ``preserved(model)`` and leaves it exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hessext._internal.contract import check_inputs, check_targets
from hessext._internal.guard import check_model, preserved
from hessext.interpret._loop import adam_loop, check_options, check_positive_int, model_dtype

__all__ = ["TwinPrediction", "train_twin", "twin_predict", "loop_violation"]


@dataclass
class TwinPrediction:
    """The anchor ensemble at test points [M]: ``mean`` (the prediction) and ``std`` (the
    spread of the 2n one-anchor predictions, population standard deviation: the
    uncertainty)."""

    mean: torch.Tensor
    std: torch.Tensor


def _pair_output(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, fn: str) -> torch.Tensor:
    out = model(x1, x2)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (len(x1),):
        raise ValueError(f"{fn}: model(x1, x2) must return F [N] (or [N, 1]), got {tuple(out.shape)}")
    return out


def _check_xy(fn: str, model: nn.Module, x, y, what: str = "x"):
    check_model(model, fn)
    x = check_inputs(x, fn, name=what)
    y = check_targets(y, len(x), f"{fn} ({what})")
    if not y.is_floating_point():
        raise TypeError(f"{fn}: the targets must be float32 or float64, got {y.dtype}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise ValueError(f"{fn}: the targets must be scalars, [N] or [N, 1]; got {tuple(y.shape)}")
    dtype, device = model_dtype(model, fn)
    return x.to(device, dtype), y.to(device, dtype)


def train_twin(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    unlabelled: torch.Tensor | None = None,
    loop_weight: float = 0.0,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool | None = False,
) -> list[float]:
    """Train the twin network ``model`` in place for ``steps`` Adam steps (cosine schedule
    from ``lr`` to 0). Each step draws ``batch_size`` random pairs (i, j) of training points
    (x [N, ...], y [N]) and minimises mean (F(x_i, x_j) − (y_i − y_j))²; with
    ``loop_weight`` λ > 0 it adds λ · mean (F(a, b) + F(b, c) + F(c, a))² over ``batch_size``
    random triples drawn from the training inputs together with ``unlabelled`` [U, ...]
    (inputs without targets). Returns the loss of every step."""
    fn = "train_twin"
    x, y = _check_xy(fn, model, x, y)
    check_positive_int(steps, "steps", fn)
    check_options(fn, lr=lr, batch_size=batch_size, seed=seed)
    if isinstance(loop_weight, bool) or not isinstance(loop_weight, (int, float)) or not loop_weight >= 0:
        raise ValueError(f"{fn}: loop_weight must be a number >= 0, got {loop_weight!r}")
    pool = x
    if unlabelled is not None:
        if loop_weight == 0:
            raise ValueError(f"{fn}: unlabelled inputs only enter the loop term; pass loop_weight > 0")
        u = check_inputs(unlabelled, fn, name="unlabelled")
        if u.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{fn}: unlabelled must have the inputs' shape [U, {', '.join(map(str, x.shape[1:]))}], "
                f"got {tuple(u.shape)}"
            )
        pool = torch.cat([x, u.to(x.device, x.dtype)])
    n, gen = len(x), torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        i, j = torch.randint(0, n, (2, batch_size), generator=gen).to(x.device)
        loss = (_pair_output(model, x[i], x[j], fn) - (y[i] - y[j])).pow(2).mean()
        if loop_weight > 0:
            p, q, r = torch.randint(0, len(pool), (3, batch_size), generator=gen).to(x.device)
            loop = loop_violation_of(model, pool[p], pool[q], pool[r], fn)
            loss = loss + loop_weight * loop.pow(2).mean()
        return loss

    return adam_loop(
        model, batch_loss, steps=steps, lr=lr, seed=seed, schedule="cosine", progress=progress, desc=fn
    )


def loop_violation_of(model: nn.Module, a, b, c, fn: str) -> torch.Tensor:
    """F(a, b) + F(b, c) + F(c, a) [N] (no checks, gradients kept: the training term)."""
    return _pair_output(model, a, b, fn) + _pair_output(model, b, c, fn) + _pair_output(model, c, a, fn)


def loop_violation(model: nn.Module, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """F(a, b) + F(b, c) + F(c, a) [N] for inputs a, b, c [N, ...]: zero for an exact
    difference network; the model runs in eval mode and comes back unchanged."""
    fn = "loop_violation"
    check_model(model, fn)
    dtype, device = model_dtype(model, fn)
    a, b, c = (check_inputs(t, fn, name=k).to(device, dtype) for t, k in ((a, "a"), (b, "b"), (c, "c")))
    if not a.shape == b.shape == c.shape:
        raise ValueError(
            f"{fn}: a, b and c must have one shape, got {tuple(a.shape)}, {tuple(b.shape)}, {tuple(c.shape)}"
        )
    with preserved(model), torch.no_grad():
        return loop_violation_of(model, a, b, c, fn)


def twin_predict(
    model: nn.Module,
    x: torch.Tensor,
    anchors_x: torch.Tensor,
    anchors_y: torch.Tensor,
    *,
    max_pairs: int = 1 << 13,
) -> TwinPrediction:
    """The anchor-ensemble prediction at x [M, ...] from anchors (anchors_x [n, ...],
    anchors_y [n]; usually the training set): the mean and population standard deviation over
    i of the 2n values F(x, x_i) + y_i and y_i − F(x_i, x). Evaluated in chunks of at most
    ``max_pairs`` pairs (8192: small enough for the activations to stay in cache, measured in
    bench/bench_invariants.py); the model runs in eval mode and comes back unchanged."""
    fn = "twin_predict"
    ax, ay = _check_xy(fn, model, anchors_x, anchors_y, "anchors")
    x = check_inputs(x, fn, name="x").to(ax.device, ax.dtype)
    if x.shape[1:] != ax.shape[1:]:
        raise ValueError(
            f"{fn}: x [M, ...] must have the anchors' feature shape {tuple(ax.shape[1:])}, "
            f"got {tuple(x.shape)}"
        )
    check_positive_int(max_pairs, "max_pairs", fn)
    n = len(ax)
    chunk = max(1, max_pairs // n)
    means, stds = [], []
    with preserved(model), torch.no_grad():
        for start in range(0, len(x), chunk):
            xc = x[start : start + chunk]
            c = len(xc)
            xx = xc.repeat_interleave(n, dim=0)
            aa = ax.repeat(c, *([1] * (ax.dim() - 1)))
            yy = ay.repeat(c)
            forward = (_pair_output(model, xx, aa, fn) + yy).reshape(c, n)
            backward = (yy - _pair_output(model, aa, xx, fn)).reshape(c, n)
            values = torch.cat([forward, backward], dim=1)
            means.append(values.mean(1))
            stds.append(values.std(1, correction=0))
    return TwinPrediction(torch.cat(means), torch.cat(stds))
