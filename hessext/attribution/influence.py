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

Cost: one solve S = H_δ⁻¹ [g_t1 … g_tm] for all test points (float64), then IF = (1/n) G S with
the training gradients, streamed over chunks of ``batch_size`` training examples
(hessext.PerSampleGrads: a ghost product, G is not materialised for Linear layers; it runs in
the model's dtype, so a float32 model gets float32-accurate scores). Memory: S [P, m] and one
chunk's layer activations, never n × P.

On a K-FAC / EK-FAC curvature (hessext.kfac, hessext.ekfac) the products stay in the Kronecker
eigenbasis: the query side is X̃_q = (Q_Sᵀ G_q Q_A)/(Λ + δ) per layer (O(d²) per query for a
Linear layer, whose per-example gradients are rank one), the training side the rotated rank-one
gradients (Q_Sᵀ d_n)(Q_Aᵀ a_n)ᵀ, scored by ghost products; ``query_rank`` r keeps the best
rank-r factors of each X̃_q (Kronfluence's query_gradient_rank) and reports the relative
Frobenius error of that compression per query in ``result.query_compression``.

Results are tensors; the solve record (hessext.SolveInfo: method, damping, λ_min when known,
the pseudo-inverse's cutoff and dropped directions) is attached as ``result.solver``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hessext._internal.contract import check_finite_result, split_pair
from hessext._internal.guard import check_model, grad_mode, preserved
from hessext._internal.params import num_params
from hessext._internal.progress import progress_bar
from hessext.curvature import distributed as dp
from hessext.curvature.kfac import KFAC
from hessext.curvature.solve import (
    attach,
    check_matches,
    check_options,
    resolve_hessian,
    solve,
    structured_solve_info,
)
from hessext.per_sample import example_grads as grads
from hessext.per_sample.capture import capture

# training examples per streamed chunk when batch_size is None: the chunk's activations and
# the product's [chunk, m] block, not n × P
_DEFAULT_TRAIN_CHUNK = 512
# at most this many float64 entries of materialised training gradients per chunk (512 MiB)
_MAX_CHUNK_ELEMS = 1 << 26

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


def _check_stream_options(batch_size, query_rank, caller):
    if batch_size is not None and not (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
    ):
        raise ValueError(f"{caller}: batch_size must be a positive integer or None, got {batch_size!r}")
    if query_rank is not None and not (
        isinstance(query_rank, int) and not isinstance(query_rank, bool) and query_rank >= 1
    ):
        raise ValueError(f"{caller}: query_rank must be a positive integer or None, got {query_rank!r}")


@grad_mode
def influence(
    model: nn.Module,
    loss_fn: Callable,
    train,
    test,
    *,
    hessian=None,
    damping: float | str = 0.0,
    method: str | None = None,
    rcond: float | None = None,
    params=None,
    regularizer=None,
    batch_size: int | None = None,
    query_rank: int | None = None,
    distributed: bool | None = None,
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
        hessian: any hessext curvature: a Hessian (dense; reused across calls and methods), a
            HessianOperator (matrix-free, method 'cg'), a structured approximation (hessext.kfac,
            ekfac, diag_ggn, hutchinson_diagonal: solved exactly in its eigenbasis), a [P, P]
            tensor, or None to compute the exact Hessian of the mean training loss (+ R).
        damping: δ ≥ 0 added to the diagonal (damped solves need δ > -λ_min), or 'heuristic'
            for a structured curvature (0.1 × each block's mean eigenvalue, Kronfluence's
            default).
        method: 'cholesky' (default for a dense Hessian), 'eigh' (default for structured
            curvature), 'cg' (default for an operator) or 'pinv' (pseudo-inverse of H_δ,
            eigen-directions with |λ + δ| ≤ rcond·max|λ + δ| dropped).
        rcond: relative cutoff of 'pinv'.
        params: the parameters differentiated (names or tensors; default all trainable).
        regularizer: R(θ) of the training objective, e.g. hessext.regularizers.L2; enters the
            Hessian and every training gradient.
        batch_size: training examples per streamed chunk (default 512).
        query_rank: keep the best rank-r factors of each layer's preconditioned query gradient
            (K-FAC / EK-FAC only); the relative error is reported in ``.query_compression``.
        distributed: score the training set data-parallel over an initialised torch.distributed
            group (None: when one is); every rank returns the full [n, m] result.
        progress: progress bars (default: when stderr is a terminal).

    Returns:
        [n, m] float64 tensor; ``.solver`` is a hessext.SolveInfo saying how H_δ⁻¹ was applied.
    """
    caller = "influence"
    check_model(model, caller)
    check_options(damping, method, rcond, caller)
    _check_stream_options(batch_size, query_rank, caller)
    with preserved(model):
        inputs, targets, H = _prepare(model, loss_fn, train, hessian, params, regularizer, caller, progress)
        n = inputs.shape[0]
        rank, world = dp.context(distributed, caller)
        chunk = batch_size or _DEFAULT_TRAIN_CHUNK
        starts = list(range(0, n, chunk))[rank::world]
        if isinstance(H, KFAC) and method in (None, "eigh"):
            scores, info, compression = _kfac_influence(
                model,
                loss_fn,
                inputs,
                targets,
                test,
                H,
                damping,
                params,
                regularizer,
                starts,
                chunk,
                query_rank,
                progress if rank == 0 else False,
                caller,
            )
        else:
            if query_rank is not None:
                raise ValueError(
                    f"{caller}: query_rank compresses the per-layer preconditioned query gradients of a "
                    f"K-FAC/EK-FAC curvature (hessext.kfac, hessext.ekfac); hessian is a "
                    f"{type(H).__name__}"
                )
            compression = None
            S, info = _test_side(
                model,
                loss_fn,
                H,
                test,
                damping=damping,
                method=method,
                rcond=rcond,
                params=params,
                caller=caller,
            )
            scores = torch.zeros(n, S.shape[1], dtype=torch.float64, device=S.device)
            for start in progress_bar(
                starts, total=len(starts), desc=caller, progress=progress if rank == 0 else False
            ):
                rows = slice(start, min(n, start + chunk))
                G = grads.train_grads(
                    model, loss_fn, inputs[rows], targets[rows], params=params, regularizer=regularizer
                )
                scores[rows] = grads.times(G, S) / n
        dp.all_reduce(scores, world)
    scores = attach(check_finite_result(scores, caller, "the influence scores"), info)
    if compression is not None:
        setattr(scores, "query_compression", compression)  # noqa: B010  (a plain attribute, as .solver)
    return scores


def _kfac_influence(
    model,
    loss_fn,
    inputs,
    targets,
    test,
    H,
    damping,
    params,
    regularizer,
    starts,
    chunk,
    query_rank,
    progress,
    caller,
):
    """Influence on a K-FAC/EK-FAC curvature in its Kronecker eigenbasis (module docstring):
    ([n, m] float64 scores with zeros outside this rank's chunks, SolveInfo, compression error
    per query or None)."""
    x, y = split_pair(test, f"{caller}: test", need_targets=True)
    loss = grads.checked_loss(model, loss_fn, x, y, caller)
    cap_q = capture(caller, model, loss, x, y, params, None, None)
    if not all(bool(torch.isfinite(layer.d).all()) for layer in cap_q.layers):
        raise ValueError(f"{caller}: test gradients are not finite")
    queries, error = H.query_factors(cap_q, damping, rank=query_rank, caller=caller)
    del cap_q
    n, m = inputs.shape[0], x.shape[0]
    train_loss = grads.checked_loss(model, loss_fn, inputs, targets, caller)
    scores = torch.zeros(n, m, dtype=torch.float64, device=inputs.device)
    for start in progress_bar(starts, total=len(starts), desc=caller, progress=progress):
        rows = slice(start, min(n, start + chunk))
        cap = capture(caller, model, train_loss, inputs[rows], targets[rows], params, regularizer, None)
        scores[rows] = H.pair_scores(cap, queries, cap.reg_grad, caller=caller).to(torch.float64) / n
    return scores, structured_solve_info(H, damping, caller), (error if query_rank is not None else None)


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
    # materialised [b, P] float64 rows: bounded whatever P is
    batch_size = max(1, min(batch_size, _MAX_CHUNK_ELEMS // max(1, num_params(model, params))))
    starts = range(0, n, batch_size)
    for start in progress_bar(starts, total=len(starts), desc=caller, progress=progress):
        stop = min(start + batch_size, n)
        Gc = grads.per_example_loss_grads(
            model, loss_fn, inputs[start:stop], targets[start:stop], params=params, regularizer=regularizer
        ).to(torch.float64)
        Xc, info = solve(H, Gc.T, damping=damping, method=method, rcond=rcond, caller=caller)
        yield start, Gc, Xc, info


@grad_mode
def relatif(
    model: nn.Module,
    loss_fn: Callable,
    train,
    test,
    *,
    hessian=None,
    damping: float | str = 0.0,
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
    check_model(model, caller)
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
    return attach(check_finite_result(scores, caller, "the RelatIF scores"), info)


@grad_mode
def self_influence(
    model: nn.Module,
    loss_fn: Callable,
    train,
    *,
    hessian=None,
    damping: float | str = 0.0,
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
    check_model(model, caller)
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
    return attach(check_finite_result(torch.cat(values), caller, "the self-influences"), info)


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
