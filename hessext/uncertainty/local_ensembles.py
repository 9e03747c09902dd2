"""Local ensembles (Madras, Atwood & D'Amour, ICLR 2020): the extrapolation score.

With H = U Λ Uᵀ, the m eigen-directions of largest curvature are the ones the training data
pins down; the remaining directions U_⊥ can move without changing the training loss (to second
order), so a test prediction whose gradient has a large component along them is one the data
does not determine:

    score(x) = ‖U_⊥ᵀ g_x‖₂ = ‖g_x - U_m U_mᵀ g_x‖₂ = sqrt(‖g_x‖² - Σ_{i ≤ m} (u_iᵀ g_x)²).

Only the m removed (top) eigenvectors are needed, so a matrix-free HessianOperator (Lanczos)
serves large P. Negative-curvature directions are never removed: they stay in U_⊥.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hessext._internal.contract import check_finite_result, split_pair
from hessext._internal.guard import check_model, grad_mode, preserved
from hessext._internal.params import num_params
from hessext.curvature.solve import check_matches, is_dense, resolve_hessian
from hessext.per_sample import example_grads as grads

__all__ = ["extrapolation_score", "predicted_class_logit"]


def predicted_class_logit(output: torch.Tensor) -> torch.Tensor:
    """One example's output → the scalar prediction used by default: the output itself when it
    has one element, else the logit of the predicted (argmax) class."""
    flat = output.reshape(-1)
    if flat.numel() == 1:
        return flat[0]
    return flat.max()  # the gradient flows to the argmax entry


# Eigenvalues closer than RESOLUTION · λ_max are not told apart: from a threshold, and from one
# another. The dense eigendecomposition is accurate to ~P·eps·‖H‖ (2e-13 relative at P = 1000)
# and Lanczos to its residual tolerance (1e-10 relative by default): both far below 1e-8, so
# the dense Hessian and the operator make the same choices wherever the spectrum is resolved.
RESOLUTION = 1e-8


def removed_count(values: torch.Tensor, threshold: float, min_removed: int, resolution: float) -> int:
    """How many of the eigenvalues ``values`` (descending; the largest ones of H, or all) a
    threshold rule removes — the one rule of the dense Hessian and of the operator:

    - an eigenvalue counts as above t only if it exceeds t + resolution (rounding noise around
      t, e.g. the zero eigenvalues of a rank-deficient Hessian at t = 0, never does);
    - eigenvalues within ``resolution`` of their neighbour are ties: a cluster of ties is removed
      whole or not at all (else the removed subspace would be an arbitrary part of it), so the
      count stops before a cluster that reaches down to t + resolution;
    - at least ``min_removed`` are removed, completed to the end of the cluster it ends in.

    The answer is final only if it is less than len(values) (the next eigenvalue is known to be
    kept) or values holds the whole spectrum."""
    v = values.tolist()
    k = len(v)

    def cluster_end(i):  # first index after the cluster that contains index i
        while i + 1 < k and v[i] - v[i + 1] <= resolution:
            i += 1
        return i + 1

    m = 0
    while m < k and v[m] > threshold + resolution:
        end = cluster_end(m)
        if v[end - 1] <= threshold + resolution:  # a cluster straddling the boundary stays
            break
        m = end
    if m < min_removed:
        m = cluster_end(min(min_removed, k) - 1) if min_removed > 0 else 0
    return m


def _removed_eigenpairs(H, n_removed, threshold, min_removed, caller):
    """(eigenvalues [m] descending, eigenvectors [P, m] or None when m = 0) of the removed
    directions."""
    P = H.num_params
    t = 0.0 if threshold is None else float(threshold)
    dense = is_dense(H)
    k = P if dense else min(P, max((n_removed or min_removed) + 1, 8))
    while True:
        # dense: the whole spectrum of the cached decomposition; operator: Lanczos for growing k
        # until a kept eigenvalue below the removed ones settles the count
        if dense:
            lam, U = H.eigh()
            top, vectors = lam.flip(0), None
        else:
            top, vectors = H.top_eigenpairs(k)
        resolution = RESOLUTION * max(float(top[0]), 0.0)
        m = n_removed if n_removed is not None else removed_count(top, t, min_removed, resolution)
        if k == P or m < k:
            break
        k = min(P, 2 * k)
    values = top[:m]
    if bool((values <= resolution).any()):
        raise ValueError(
            f"{caller}: removing {m} directions would remove eigenvalues <= 0 (to the resolution "
            f"{RESOLUTION:g}·λ_max; smallest removed: {float(values.min()):.6g}); negative-curvature "
            "and flat directions must stay in the ensemble subspace — remove fewer "
            "(a smaller n_removed or min_removed)"
        )
    if n_removed is not None and 0 < m < k and float(top[m - 1] - top[m]) <= resolution:
        raise ValueError(
            f"{caller}: n_removed={m} splits tied eigenvalues (λ_{m} = {float(top[m - 1]):.10g} and "
            f"λ_{m + 1} = {float(top[m]):.10g} agree to {RESOLUTION:g}·λ_max): the removed subspace "
            "would be an arbitrary part of their eigenspace; remove fewer or more directions"
        )
    if not m:
        return values, None
    return values, (U[:, P - m :].flip(1) if dense else vectors[:, :m])


@grad_mode
def extrapolation_score(
    model: nn.Module,
    test,
    *,
    hessian,
    n_removed: int | None = None,
    threshold: float | None = None,
    min_removed: int = 2,
    gradient: str = "prediction",
    label: str = "true",
    loss_fn: Callable | None = None,
    output_fn: Callable | None = None,
    regularizer=None,
    params=None,
) -> torch.Tensor:
    """Local-ensemble extrapolation score ‖U_⊥ᵀ g_x‖₂ of every test input ([m] float64).

    Args:
        model: the trained model (left as it was; evaluated in eval mode).
        test: inputs [m, ...], or (inputs, targets) (targets needed for gradient='loss' with
            label='true').
        hessian: the training-loss Hessian: a hessext.Hessian (its cached eigendecomposition is
            reused), a HessianOperator (Lanczos), a structured approximation (hessext.kfac,
            ekfac, diag_ggn: its eigenpairs are exact for the approximation), or a [P, P] tensor.
        n_removed: remove exactly this many top eigen-directions; or
        threshold: remove every direction with eigenvalue > threshold, but at least
            ``min_removed`` (the toolbox's t ∈ {1, 0.1, 0.01, 0.001}, min_removed = 2). The
            rule (``removed_count``) is the same for a dense Hessian and an operator: "above t"
            means above t + 1e-8·λ_max, and tied eigenvalues are removed together or not at all.
        gradient: 'prediction' (Madras et al.: g = ∇θ s(x) with s = output_fn(model(x)), by
            default the predicted-class logit, see predicted_class_logit) or 'loss' (the
            toolbox: g = ∇θ loss_fn(model(x), y), plus ∇R when ``regularizer`` is given).
        label: for gradient='loss': 'true' (the given targets; the toolbox's "true version") or
            'predicted' (the model's argmax class; its "minimal version").
        params: the parameters the Hessian is over (names or tensors; default all trainable).

    Returns:
        [m] float64 scores; ``.n_removed`` and ``.removed_eigenvalues`` say what was removed.
    """
    caller = "extrapolation_score"
    check_model(model, caller)
    if gradient not in ("prediction", "loss"):
        raise ValueError(f"{caller}: gradient must be 'prediction' or 'loss', got {gradient!r}")
    if label not in ("true", "predicted"):
        raise ValueError(f"{caller}: label must be 'true' or 'predicted', got {label!r}")
    if (n_removed is None) == (threshold is None):
        raise ValueError(
            f"{caller}: give exactly one of n_removed and threshold "
            f"(got n_removed={n_removed!r}, threshold={threshold!r})"
        )
    if not (isinstance(min_removed, int) and min_removed >= 0):
        raise ValueError(f"{caller}: min_removed must be an integer >= 0, got {min_removed!r}")
    if threshold is not None and not (float(threshold) >= 0):
        raise ValueError(
            f"{caller}: threshold must be >= 0 (negative-curvature directions stay "
            f"in the ensemble), got {threshold!r}"
        )
    if gradient == "loss" and loss_fn is None:
        raise ValueError(f"{caller}: gradient='loss' needs loss_fn")
    if hessian is None:
        raise ValueError(
            f"{caller}: hessian is required (a hessext.Hessian, HessianOperator or "
            "[P, P] tensor of the training loss)"
        )
    with preserved(model):
        H = resolve_hessian(hessian, model, None, None, params=params, regularizer=None, caller=caller)
        P = num_params(model, params)
        check_matches(H, model, params, caller)
        if n_removed is not None and not (isinstance(n_removed, int) and 0 <= n_removed <= P):
            raise ValueError(f"{caller}: n_removed must be an integer in [0, P={P}], got {n_removed!r}")
        need_targets = gradient == "loss" and label == "true"
        x, y = split_pair(test, f"{caller}: test", need_targets=need_targets)
        if gradient == "prediction":
            g = grads.per_example_output_grads(model, x, output_fn or predicted_class_logit, params=params)
        else:
            if label == "predicted":
                with torch.no_grad():
                    y = model(x.clone()).argmax(dim=-1)  # a model may write its input in place
            assert loss_fn is not None  # checked above: gradient='loss' needs it
            g = grads.per_example_loss_grads(model, loss_fn, x, y, params=params, regularizer=regularizer)
        if not torch.isfinite(g).all():
            raise ValueError(f"{caller}: test gradients are not finite")
        g = g.to(torch.float64)
        if n_removed == 0:
            values, U = torch.zeros(0, dtype=torch.float64, device=g.device), None
        else:
            values, U = _removed_eigenpairs(H, n_removed, threshold, min_removed, caller)
        if U is None:
            residual = g
        else:
            U = U.to(device=g.device, dtype=torch.float64)
            # the residual form avoids the cancellation of ‖g‖² - Σ(uᵀg)² for small scores
            residual = g - (g @ U) @ U.T
        scores = torch.linalg.vector_norm(residual, dim=1)
        check_finite_result(scores, caller, "the scores")
    scores.n_removed = int(values.numel())
    scores.removed_eigenvalues = values.detach().to(torch.float64).cpu()
    return scores
