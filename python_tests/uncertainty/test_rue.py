"""RUE against its definition (dense float64 Newton steps evaluated model by model) and against
actual bootstrap retraining of a convex model (L2-regularised logistic regression)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from hessext.testing import (
    assert_same_state,
    logistic_problem,
    model_state,
    newton_logistic,
    reference_grads,
    reference_hessian,
    single_thread,
    spearman,
    tiny_classifier,
)
from hessext.uncertainty import bootstrap_counts


def test_bootstrap_counts_are_multinomial_and_seeded():
    W = bootstrap_counts(50, 7, seed=3)
    assert W.shape == (50, 7)
    assert torch.equal(W.sum(0), torch.full((7,), 50.0, dtype=torch.float64))
    assert (W >= 0).all() and torch.equal(W, W.round())
    assert torch.equal(W, bootstrap_counts(50, 7, seed=3))
    assert not torch.equal(W, bootstrap_counts(50, 7, seed=4))
    # every column is a different resample
    assert len({tuple(c.tolist()) for c in W.T}) == 7


def _bootstrap_models(model, loss_fn, train, l2, damping, B, seed):
    """The B Newton-step models θ_b = θ - H_δ⁻¹ Gᵀ(w_b - 1)/n, built one by one in float64."""
    X, y = train
    n = X.shape[0]
    H = reference_hessian(model, loss_fn, train, l2=l2)
    G = reference_grads(model, loss_fn, X, y, l2=l2)
    A = H + damping * torch.eye(H.shape[0], dtype=torch.float64)
    steps = torch.linalg.solve(A, G.T @ (bootstrap_counts(n, B, seed) - 1)) / n
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    models = []
    for b in range(B):
        m = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(theta - steps[:, b], m.parameters())
        models.append(m.eval())
    return models


@pytest.mark.parametrize("target,label", [("prediction", "true"), ("loss", "true"), ("loss", "predicted")])
def test_rue_matches_the_definition(target, label):
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=15, m=6)
    l2, damping, B, seed = 0.05, 1.5, 9, 11
    models = _bootstrap_models(model, loss_fn, train, l2, damping, B, seed)
    with torch.no_grad():
        outs = torch.stack([m(Xt) for m in models])  # [B, m, C]
    if target == "prediction":
        expected = outs
    else:
        labels = outs.argmax(-1) if label == "predicted" else yt.expand(B, -1)
        expected = nn.functional.cross_entropy(outs.permute(0, 2, 1), labels, reduction="none")
    var, values = hessext.rue(
        model,
        loss_fn,
        train,
        (Xt, yt),
        n_bootstrap=B,
        damping=damping,
        seed=seed,
        target=target,
        label=label,
        regularizer=L2(l2),
        return_values=True,
        bootstrap_batch=4,
    )
    # float64 throughout: rounding only
    torch.testing.assert_close(values, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, expected.var(0, correction=0), rtol=1e-9, atol=1e-14)
    assert var.solver.method == "cholesky" and var.solver.damping == damping


def test_rue_output_fn_and_reuse_of_one_eigendecomposition():
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=15, m=6)
    H = hessext.Hessian.from_matrix(reference_hessian(model, loss_fn, train))
    probs = lambda o: o.softmax(-1)
    a = hessext.rue(
        model, loss_fn, train, Xt, n_bootstrap=6, hessian=H, damping=2.0, method="eigh", output_fn=probs
    )
    b = hessext.rue(
        model, loss_fn, train, Xt, n_bootstrap=6, hessian=H, damping=2.0, method="cholesky", output_fn=probs
    )
    assert a.shape == (6, 3) and a.solver.method == "eigh" and a.solver.lambda_min is not None
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-15)


def test_rue_is_reproducible_for_a_seed():
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=15, m=6)
    run = lambda seed: hessext.rue(model, loss_fn, train, Xt, n_bootstrap=5, damping=2.0, seed=seed)
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_rue_tracks_actual_bootstrap_retraining_of_logistic_regression():
    X, y, Xt, yt = logistic_problem(n=300, d=5, seed=2, m=40)
    n, d = X.shape
    l2, B, seed = 0.01, 50, 5
    Xa = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    theta = newton_logistic(Xa, y, torch.ones(n, dtype=X.dtype), l2, torch.zeros(d + 1, dtype=X.dtype))
    model = nn.Linear(d, 1).double()
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    W = bootstrap_counts(n, B, seed)
    with single_thread():
        refit = torch.stack([newton_logistic(Xa, y, W[:, b], l2, theta) for b in range(B)])  # [B, d+1]
    actual = (Xt @ refit[:, :d].T + refit[:, d]).T  # [B, m] logits
    rue_var = hessext.rue(
        model, nn.BCEWithLogitsLoss(), (X, y[:, None]), Xt, n_bootstrap=B, seed=seed, regularizer=L2(l2)
    )[:, 0]
    assert spearman(rue_var, actual.var(0, correction=0)) >= 0.9


def test_rue_bad_inputs_and_model_untouched():
    model, loss_fn, train, (Xt, yt) = tiny_classifier()
    model.train()
    state = model_state(model)
    for kwargs, message in [
        (dict(n_bootstrap=1), "n_bootstrap must be an integer >= 2"),
        (dict(target="entropy"), "target must be"),
        (dict(target="loss", label="mine"), "label must be"),
        (dict(target="loss", label="true"), "needs the labels"),
        (dict(damping=0.0, method="cholesky"), "lambda_min"),
        (dict(bootstrap_batch=0), "bootstrap_batch"),
    ]:
        with pytest.raises(ValueError, match=message):
            hessext.rue(model, loss_fn, train, Xt, **{"damping": 3.0, **kwargs})
        assert_same_state(model, state)
    hessext.rue(model, loss_fn, train, (Xt, yt), damping=3.0, target="loss", n_bootstrap=3)
    assert_same_state(model, state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_rue_cuda_matches_cpu():
    model, loss_fn, train, (Xt, yt) = tiny_classifier()
    cpu = hessext.rue(model, loss_fn, train, Xt, damping=3.0, n_bootstrap=8)
    dev = torch.device("cuda")
    model.to(dev)
    got = hessext.rue(model, loss_fn, tuple(t.to(dev) for t in train), Xt.to(dev), damping=3.0, n_bootstrap=8)
    torch.testing.assert_close(got.cpu(), cpu, rtol=1e-9, atol=1e-14)
