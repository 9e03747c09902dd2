"""The local-ensemble extrapolation score against a closed form (linear regression on data
confined to a subspace) and against dense float64 eigendecompositions on a tiny classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from hessext.testing import (
    assert_same_state,
    model_state,
    reference_grads,
    reference_hessian,
    reference_output_grads,
    tiny_classifier,
)


def _subspace_regression(n=40, d=7, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    X = torch.randn(n, k, generator=g, dtype=torch.float64) @ Q.T  # the data span is range(Q)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    Xt = torch.randn(6, d, generator=g, dtype=torch.float64)
    yt = torch.randn(6, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    loss_fn = lambda out, t: 0.5 * (out - t).pow(2).sum(1)
    return model, loss_fn, (X, y), (Xt, yt), Q


def test_linear_regression_on_a_subspace_closed_form():
    """H = XᵀX/n has range = the data span; removing its k non-zero directions leaves the
    component of the test gradient outside the span: for the prediction wᵀx the gradient is x."""
    model, loss_fn, train, (Xt, yt), Q = _subspace_regression()
    H = hessext.hessian(model, loss_fn, train)
    outside = Xt - (Xt @ Q) @ Q.T
    score = hessext.extrapolation_score(model, Xt, hessian=H, threshold=1e-8, min_removed=0)
    assert score.n_removed == Q.shape[1]
    torch.testing.assert_close(score, outside.norm(dim=1), rtol=1e-10, atol=0)
    # loss gradient (f(x) - y) x: the same geometry scaled by the residual
    residual = (Xt @ model.weight.detach().T - yt).abs()[:, 0]
    score = hessext.extrapolation_score(
        model, (Xt, yt), hessian=H, n_removed=3, gradient="loss", loss_fn=loss_fn
    )
    torch.testing.assert_close(score, residual * outside.norm(dim=1), rtol=1e-10, atol=0)
    # inputs inside the data span are not extrapolations
    inside = torch.randn(4, 3, dtype=torch.float64) @ Q.T
    score = hessext.extrapolation_score(model, inside, hessian=H, n_removed=3)
    assert float(score.max()) <= 1e-12 * float(inside.norm(dim=1).max())


def _dense_scores(H, g, m):
    lam, U = torch.linalg.eigh(H)
    Um = U[:, -m:] if m else U[:, :0]
    return ((g * g).sum(1) - ((g @ Um) ** 2).sum(1)).clamp_min(0).sqrt(), lam


@pytest.mark.parametrize("gradient,label", [("prediction", "true"), ("loss", "true"), ("loss", "predicted")])
def test_matches_dense_eigendecomposition(gradient, label):
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=30, m=7)
    l2 = 0.1
    H = reference_hessian(model, loss_fn, train, l2=l2)
    if gradient == "prediction":
        g = reference_output_grads(model, Xt, lambda o: o.max())
    else:
        labels = model(Xt).argmax(1) if label == "predicted" else yt
        g = reference_grads(model, loss_fn, Xt, labels, l2=l2)
    kwargs = dict(gradient=gradient, label=label, loss_fn=loss_fn, regularizer=L2(l2))
    Hobj = hessext.Hessian.from_matrix(H)
    lam = torch.linalg.eigvalsh(H)
    for threshold in (0.05, 0.01):
        expected_m = max(2, int((lam > threshold).sum()))
        expected, _ = _dense_scores(H, g, expected_m)
        got = hessext.extrapolation_score(model, (Xt, yt), hessian=Hobj, threshold=threshold, **kwargs)
        assert got.n_removed == expected_m
        torch.testing.assert_close(got.removed_eigenvalues, lam.flip(0)[:expected_m], rtol=1e-10, atol=1e-14)
        # float64 throughout; the residual form is exact to rounding of ‖g‖
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12 * float(g.norm(dim=1).max()))
    got = hessext.extrapolation_score(model, (Xt, yt), hessian=H, n_removed=5, **kwargs)
    torch.testing.assert_close(
        got, _dense_scores(H, g, 5)[0], rtol=1e-9, atol=1e-12 * float(g.norm(dim=1).max())
    )


def test_min_removed_and_lanczos_operator():
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=30, m=7)
    H = hessext.Hessian.from_matrix(reference_hessian(model, loss_fn, train, l2=0.1))
    big = float(H.eigh()[0][-1]) * 2
    got = hessext.extrapolation_score(model, Xt, hessian=H, threshold=big, min_removed=3)
    assert got.n_removed == 3
    dense = hessext.extrapolation_score(model, Xt, hessian=H, threshold=0.01)
    lanczos = hessext.extrapolation_score(model, Xt, hessian=H.operator(), threshold=0.01)
    assert lanczos.n_removed == dense.n_removed
    torch.testing.assert_close(lanczos, dense, rtol=1e-7, atol=1e-10)


def test_negative_curvature_stays_and_bad_inputs():
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=30, m=7)
    model.train()
    state = model_state(model)
    H = reference_hessian(model, loss_fn, train)
    lam = torch.linalg.eigvalsh(H)
    assert lam[0] < 0
    n_positive = int((lam > 0).sum())
    cases = [
        (dict(n_removed=n_positive + 1), "eigenvalues <= 0"),
        (dict(n_removed=3, threshold=0.1), "exactly one of"),
        (dict(), "exactly one of"),
        (dict(threshold=-0.1), "threshold must be >= 0"),
        (dict(n_removed=2, gradient="logit"), "gradient must be"),
        (dict(n_removed=2, gradient="loss"), "needs loss_fn"),
        (dict(n_removed=2, gradient="loss", loss_fn=loss_fn, label="true", test=Xt), "needs the labels"),
        (dict(n_removed=2, hessian=H[1:, 1:]), "Hessian is over 30"),
        (dict(n_removed=2, hessian=None), "hessian is required"),
        (dict(n_removed=2, test=Xt * float("nan")), "non-finite"),
        (dict(n_removed=2, min_removed=-1), "min_removed"),
    ]
    for overrides, message in cases:
        kwargs = dict(hessian=H, test=(Xt, yt))
        kwargs.update(overrides)
        with pytest.raises(ValueError, match=message):
            hessext.extrapolation_score(model, kwargs.pop("test"), **kwargs)
        assert_same_state(model, state)
    hessext.extrapolation_score(model, Xt, hessian=H, threshold=0.0)
    assert_same_state(model, state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model, loss_fn, train, (Xt, yt) = tiny_classifier(n=30, m=7)
    H = reference_hessian(model, loss_fn, train, l2=0.1)
    cpu = hessext.extrapolation_score(model, Xt, hessian=H, threshold=0.01)
    model.cuda()
    got = hessext.extrapolation_score(model, Xt.cuda(), hessian=H.cuda(), threshold=0.01)
    torch.testing.assert_close(got.cpu(), cpu, rtol=1e-9, atol=1e-12)
