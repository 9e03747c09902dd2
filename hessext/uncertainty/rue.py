"""RUE: resampling uncertainty estimation (Schulam & Saria, AISTATS 2019).

Bootstrap retraining approximated by one Newton step from the trained θ. A bootstrap resample
with counts w_b ~ Multinomial(n, 1/n) reweights the training objective to
(1/n) Σ_i w_bi ℓ(z_i) + R; its gradient at θ is (1/n) Gᵀ(w_b - 1), so

    θ_b = θ - H_δ⁻¹ Gᵀ (w_b - 1) / n.

All B right-hand sides Gᵀ(W - 1) come from one transposed product with the training gradients
and one solve; every test input is then evaluated under all B parameter sets in batched
functional forwards (torch.func.functional_call under vmap over the stacked parameters).
RUE(x) is the variance over the B models (population variance, 1/B, as the original toolbox).

Unlike the original toolbox code, every bootstrap model's value is kept (its published RUE
equalled (B-1)/B²·L_0² because only b = 0 was stored) and the draws are seeded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from hessext._internal.contract import check_finite_result, split_pair
from hessext._internal.guard import check_model, grad_mode, preserved
from hessext._internal.params import flat_parameters
from hessext._internal.per_example import Batched, over_examples
from hessext._internal.progress import progress_bar
from hessext.curvature.solve import attach, check_matches, check_options, resolve_hessian, solve
from hessext.per_sample import example_grads as grads

__all__ = ["rue", "bootstrap_counts"]


def bootstrap_counts(n: int, n_bootstrap: int, seed: int) -> torch.Tensor:
    """[n, B] multinomial bootstrap counts (each column sums to n), drawn on the CPU from
    ``seed`` so the same seed gives the same resamples on every device."""
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randint(n, (n_bootstrap, n), generator=generator)
    counts = torch.zeros(n_bootstrap, n, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(counts))
    return counts.T.contiguous()


@grad_mode
def rue(
    model: nn.Module,
    loss_fn: Callable,
    train,
    test,
    *,
    n_bootstrap: int = 50,
    hessian=None,
    damping: float | str = 0.0,
    method: str | None = None,
    rcond: float | None = None,
    seed: int = 0,
    target: str = "prediction",
    label: str = "true",
    output_fn: Callable | None = None,
    params=None,
    regularizer=None,
    return_values: bool = False,
    bootstrap_batch: int = 64,
    progress: bool | None = None,
):
    """RUE uncertainty of every test input.

    Args:
        model, loss_fn, train, hessian, damping, method, rcond, params, regularizer: as in
            hessext.influence (any curvature object, structured ones included; the toolbox
            used damping 1.2 for RUE).
        test: inputs [m, ...], or (inputs, targets) (targets needed for target='loss' with
            label='true').
        n_bootstrap: B, the number of bootstrap models (all are kept).
        seed: seeds the multinomial counts (hessext.rue.bootstrap_counts).
        target: 'prediction' (the paper: variance of output_fn(model(x)), by default the raw
            output, per component; pass e.g. ``lambda o: o.softmax(-1)`` for class
            probabilities) or 'loss' (the toolbox: variance of the test loss).
        label: for target='loss': 'true' (given targets) or 'predicted' (each bootstrap model's
            own argmax class).
        output_fn: maps one example's output to the predicted quantity (target='prediction').
        return_values: also return the per-bootstrap values.
        bootstrap_batch: how many bootstrap models one vmapped forward evaluates.

    Returns:
        variance [m, ...] float64 (``.solver`` says how H_δ⁻¹ was applied); with
        ``return_values``: (variance, values [B, m, ...]).
    """
    caller = "rue"
    check_model(model, caller)
    check_options(damping, method, rcond, caller)
    if not (isinstance(n_bootstrap, int) and n_bootstrap >= 2):
        raise ValueError(f"{caller}: n_bootstrap must be an integer >= 2, got {n_bootstrap!r}")
    if target not in ("prediction", "loss"):
        raise ValueError(f"{caller}: target must be 'prediction' or 'loss', got {target!r}")
    if label not in ("true", "predicted"):
        raise ValueError(f"{caller}: label must be 'true' or 'predicted', got {label!r}")
    if not (isinstance(bootstrap_batch, int) and bootstrap_batch >= 1):
        raise ValueError(f"{caller}: bootstrap_batch must be a positive integer, got {bootstrap_batch!r}")
    with preserved(model):
        inputs, targets = split_pair(train, f"{caller}: train", need_targets=True)
        x, y = split_pair(test, f"{caller}: test", need_targets=target == "loss" and label == "true")
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
        names, tensors = flat_parameters(model, params)
        check_matches(H, model, params, caller)

        n = inputs.shape[0]
        centred = bootstrap_counts(n, n_bootstrap, seed) - 1.0
        G = grads.train_grads(model, loss_fn, inputs, targets, params=params, regularizer=regularizer)
        rhs = grads.transpose_times(G, centred.to(inputs.device)) / n
        steps, info = solve(H, rhs, damping=damping, method=method, rcond=rcond, caller=caller)

        # θ_b = θ - step_b, stacked [B, *shape] per parameter tensor, in the model's dtype
        stacked, offset = {}, 0
        for name, t in zip(names, tensors):
            k = t.numel()
            delta = steps[offset : offset + k].T.reshape(n_bootstrap, *t.shape)
            stacked[name] = t.detach().unsqueeze(0) - delta.to(device=t.device, dtype=t.dtype)
            offset += k

        def forward(p):
            return functional_call(model, p, (x.clone(),))  # a model may write its input in place

        chunks = []
        starts = range(0, n_bootstrap, bootstrap_batch)
        batched = Batched()  # vmapped over the bootstrap models, or one by one (e.g. nn.LSTM)
        for start in progress_bar(starts, total=len(starts), desc=caller, progress=progress):
            batch = {k: v[start : start + bootstrap_batch] for k, v in stacked.items()}
            with torch.no_grad():
                outputs = over_examples(forward, (0,), batch, state=batched)  # [b, m, ...]
                chunks.append(_values(outputs, y, loss_fn, target, label, output_fn))
        values = torch.cat(chunks).to(torch.float64)
        check_finite_result(
            values,
            caller,
            "the bootstrap models' values on the test inputs",
            f"their Newton steps are too large for the model (damping={damping:g}; raise it)",
        )
        variance = values.var(dim=0, correction=0)
    attach(variance, info)
    if return_values:
        return variance, attach(values, info)
    return variance


def _values(outputs, y, loss_fn, target, label, output_fn):
    """Per-bootstrap, per-test-input values [b, m, ...] from outputs [b, m, ...]."""
    if target == "prediction":
        if output_fn is None:
            return outputs
        return vmap(vmap(output_fn))(outputs)

    def one_loss(out, t):
        return loss_fn(out.unsqueeze(0), t.unsqueeze(0)).reshape(())

    if label == "predicted":
        labels = outputs.argmax(dim=-1)
        return vmap(vmap(one_loss))(outputs, labels)
    return vmap(vmap(one_loss), in_dims=(0, None))(outputs, y)
