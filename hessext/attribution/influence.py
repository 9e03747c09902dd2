"""Influence functions (Koh & Liang 2017), RelatIF (Barshan et al. 2020) and self-influence.

Sign convention, used everywhere in hessext:

    IF(z, t) = (1/n) · g_tᵀ H_δ⁻¹ g_z

is the predicted INCREASE of the loss at test point t if training example z were removed and
the model retrained (= -(1/n)·I_up,loss of Koh & Liang). Positive: z helped t (removing it
would hurt); negative: z harmed t.

Here H is the Hessian of the training objective L(θ) = (1/n) Σ_i ℓ(z_i; θ) + R(θ), H_δ = H + δI,
g_z = ∇ℓ(z; θ) + ∇R(θ) (the regulariser's gradient is part of every training example's
gradient: removing z and retraining the same objective on n-1 examples moves θ by
(1/n) H⁻¹ g_z to first order) and g_t = ∇ℓ(t; θ) is the gradient of the test point's own
loss (no regulariser: IF predicts the change of the test loss itself).

Cost: one solve S = H_δ⁻¹ [g_t1 … g_tm] for all test points (float64), then one product
IF = (1/n) G S with the training gradients (hessext.PerSampleGrads: a ghost product, G [n, P] is
not materialised for Linear layers; it runs in the model's dtype, so a float32 model gets
float32-accurate scores).

Results are tensors; the solve record (hessext.SolveInfo: method, damping, λ_min when known,
the pseudo-inverse's cutoff and dropped directions) is attached as ``result.solver``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hessext._internal.contract import split_pair
from hessext._internal.guard import preserved
from hessext._internal.progress import progress_bar
from hessext.curvature.solve import attach, check_matches, check_options, resolve_hessian, solve
from hessext.per_sample import example_grads as grads

__all__ = ["influence", "relatif", "self_influence", "most_helpful", "most_harmful"]


def _prepare(model, loss_fn, train, hessian, params, regularizer, caller, progress):
    inputs, targets = split_pair(train, f"{caller}: train", need_targets=True)
    H = resolve_hessian(
        hessian,
        model,
        loss_fn,
        (inputs, targets),
        params=params,
        regularizer=regularizer,
        caller=caller,
        progress=progress,
    )
    check_matches(H, model, params, caller)
    return inputs, targets, H


def _test_side(model, loss_fn, H, test, *, damping, method, rcond, params, caller):
    """S = H_δ⁻¹ G_testᵀ [P, m] and the solve record."""
    x, y = split_pair(test, f"{caller}: test", need_targets=True)
    G_test = grads.per_example_loss_grads(model, loss_fn, x, y, params=params)
    if not torch.isfinite(G_test).all():
        raise ValueError(f"{caller}: test gradients are not finite")
    return solve(H, G_test.T, damping=damping, method=method, rcond=rcond, caller=caller)


def _prepare_with_test(
    model, loss_fn, train, test, hessian, *, damping, method, rcond, params, regularizer, caller, progress
):
    """(inputs, targets, H) of the training side and (S, solve record) of the test side."""
    inputs, targets, H = _prepare(model, loss_fn, train, hessian, params, regularizer, caller, progress)
    S, info = _test_side(
        model, loss_fn, H, test, damping=damping, method=method, rcond=rcond, params=params, caller=caller
    )
    return inputs, targets, H, S, info


def influence(
    model: nn.Module,
    loss_fn: Callable,
    train,
    test,
    *,
    hessian=None,
    damping: float = 0.0,
    method: str | None = None,
    rcond: float | None = None,
    params=None,
    regularizer=None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Influence of every training example on the loss of every test point.

    IF(z, t) = (1/n) g_tᵀ H_δ⁻¹ g_z: the predicted increase of t's loss when z is removed and the
    model retrained. Positive: z helped t; negative: z harmed t (see the module docstring).

    Args:
        model: the trained model (left exactly as it was; evaluated in eval mode).
        loss_fn: ``loss_fn(outputs, targets)``, mean-reduced (e.g. nn.CrossEntropyLoss()).
        train: (inputs [n, ...], targets [n, ...]), the training set the model was fitted on.
        test: (inputs [m, ...], targets [m, ...]).
        hessian: a hessext.Hessian (dense; reused across calls and methods), a HessianOperator
            (matrix-free, method 'cg'), a [P, P] tensor, or None to compute the exact Hessian of
            the mean training loss (+ regularizer).
        damping: δ ≥ 0 added to the diagonal. Damped solves need δ > -λ_min.
        method: 'cholesky' (default for a dense Hessian), 'eigh', 'cg' (default for an
            operator) or 'pinv' (pseudo-inverse of H_δ, eigen-directions with
            |λ + δ| ≤ rcond·max|λ + δ| dropped).
        rcond: relative cutoff of 'pinv'.
        params: the parameters differentiated (names or tensors; default all trainable).
        regularizer: R(θ) of the training objective, e.g. hessext.regularizers.L2; enters the
            Hessian and every training gradient.
        progress: progress bars (default: when stderr is a terminal).

    Returns:
        [n, m] float64 tensor; ``.solver`` is a hessext.SolveInfo saying how H_δ⁻¹ was applied.
    """
    caller = "influence"
    check_options(damping, method, rcond, caller)
    with preserved(model):
        inputs, targets, H, S, info = _prepare_with_test(
            model,
            loss_fn,
            train,
            test,
            hessian,
            damping=damping,
            method=method,
            rcond=rcond,
            params=params,
            regularizer=regularizer,
            caller=caller,
            progress=progress,
        )
        G = grads.train_grads(model, loss_fn, inputs, targets, params=params, regularizer=regularizer)
        scores = grads.times(G, S) / inputs.shape[0]
    return attach(scores, info)


def _train_chunks(
    model,
    loss_fn,
    inputs,
    targets,
    H,
    *,
    damping,
    method,
    rcond,
    params,
    regularizer,
    batch_size,
    progress,
    caller,
):
    """Yield (start, G_chunk [b, P] float64, X_chunk = H_δ⁻¹ G_chunkᵀ [P, b], info)."""
    n = inputs.shape[0]
    starts = range(0, n, batch_size)
    for start in progress_bar(starts, total=len(starts), desc=caller, progress=progress):
        stop = min(start + batch_size, n)
        Gc = grads.per_example_loss_grads(
            model, loss_fn, inputs[start:stop], targets[start:stop], params=params, regularizer=regularizer
        ).to(torch.float64)
        Xc, info = solve(H, Gc.T, damping=damping, method=method, rcond=rcond, caller=caller)
        yield start, Gc, Xc, info


def relatif(
    model: nn.Module,
    loss_fn: Callable,
    train,
    test,
    *,
    hessian=None,
    damping: float = 0.0,
    method: str | None = None,
    rcond: float | None = None,
    params=None,
    regularizer=None,
    batch_size: int = 512,
    progress: bool | None = None,
) -> torch.Tensor:
    """RelatIF(z, t) = IF(z, t) / ‖H_δ⁻¹ g_z‖₂ (Barshan et al. 2020, θ-relative influence).

    Same arguments, sign convention and ``.solver`` record as :func:`influence`; returns
    [n, m] float64. The denominator depends only on the training example: it is computed once
    per example (the training set is processed in chunks of ``batch_size`` with a progress bar).
    """
    caller = "relatif"
    check_options(damping, method, rcond, caller)
    with preserved(model):
        inputs, targets, H, S, info = _prepare_with_test(
            model,
            loss_fn,
            train,
            test,
            hessian,
            damping=damping,
            method=method,
            rcond=rcond,
            params=params,
            regularizer=regularizer,
            caller=caller,
            progress=progress,
        )
        n = inputs.shape[0]
        scores = torch.empty(n, S.shape[1], dtype=torch.float64, device=S.device)
        for start, Gc, Xc, _ in _train_chunks(
            model,
            loss_fn,
            inputs,
            targets,
            H,
            damping=damping,
            method=method,
            rcond=rcond,
            params=params,
            regularizer=regularizer,
            batch_size=batch_size,
            progress=progress,
            caller=caller,
        ):
            norms = torch.linalg.vector_norm(Xc, dim=0)
            scores[start : start + Gc.shape[0]] = (Gc @ S) / n / norms[:, None]
    return attach(scores, info)


def self_influence(
    model: nn.Module,
    loss_fn: Callable,
    train,
    *,
    hessian=None,
    damping: float = 0.0,
    method: str | None = None,
    rcond: float | None = None,
    params=None,
    regularizer=None,
    batch_size: int = 512,
    progress: bool | None = None,
) -> torch.Tensor:
    """Self-influence g_zᵀ H_δ⁻¹ g_z of every training example z ([n] float64; large values flag
    atypical or mislabelled examples). g_z includes ∇R when ``regularizer`` is given; there is no
    1/n factor. Arguments and ``.solver`` as in :func:`influence`."""
    caller = "self_influence"
    check_options(damping, method, rcond, caller)
    with preserved(model):
        inputs, targets, H = _prepare(model, loss_fn, train, hessian, params, regularizer, caller, progress)
        values = []
        info = None
        for _, Gc, Xc, info in _train_chunks(  # noqa: B007 (the record is the result's)
            model,
            loss_fn,
            inputs,
            targets,
            H,
            damping=damping,
            method=method,
            rcond=rcond,
            params=params,
            regularizer=regularizer,
            batch_size=batch_size,
            progress=progress,
            caller=caller,
        ):
            values.append((Gc * Xc.T).sum(dim=1))
    return attach(torch.cat(values), info)


def _top(scores: torch.Tensor, k: int, largest: bool, caller: str):
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(
            f"{caller}: scores must be an [n_train, n_test] tensor, got "
            f"{getattr(scores, 'shape', type(scores))}"
        )
    if not (isinstance(k, int) and 1 <= k <= scores.shape[0]):
        raise ValueError(f"{caller}: k must be an integer in [1, n_train={scores.shape[0]}], got {k!r}")
    return torch.topk(scores.T, k, dim=1, largest=largest)


def most_helpful(scores: torch.Tensor, k: int):
    """The k training examples with the largest influence on each test point.

    scores: [n_train, n_test] from :func:`influence` or :func:`relatif`. Returns
    (values [n_test, k], indices [n_test, k]) in decreasing order of influence."""
    return _top(scores, k, True, "most_helpful")


def most_harmful(scores: torch.Tensor, k: int):
    """The k training examples with the most negative influence on each test point (removing
    them would lower its loss most). Returns (values [n_test, k], indices [n_test, k]),
    most harmful first."""
    return _top(scores, k, False, "most_harmful")
