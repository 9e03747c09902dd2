"""The local-ensemble extrapolation score against a closed form (linear regression on data
confined to a subspace) and against dense float64 eigendecompositions on a tiny classifier."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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
from hessext.uncertainty.local_ensembles import RESOLUTION, removed_count


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


# ---- one rule for the dense Hessian and the operator (issue 15) ---------------------------------


def test_threshold_zero_same_removed_set_dense_and_operator():
    """On a rank-deficient Hessian the zero eigenvalues come out as ±1e-17 rounding noise: at
    threshold 0 the dense path counted the positive noise as curvature (removing arbitrary flat
    directions) while Lanczos stopped elsewhere. One rule now: above t means above
    t + 1e-8·λ_max, so both remove exactly the data span's directions."""
    model, loss_fn, train, (Xt, yt), Q = _subspace_regression()
    H = hessext.hessian(model, loss_fn, train)
    dense = hessext.extrapolation_score(model, Xt, hessian=H, threshold=0.0, min_removed=0)
    operator = hessext.extrapolation_score(model, Xt, hessian=H.operator(), threshold=0.0, min_removed=0)
    assert dense.n_removed == operator.n_removed == Q.shape[1]
    torch.testing.assert_close(operator.removed_eigenvalues, dense.removed_eigenvalues, rtol=1e-9, atol=0)
    torch.testing.assert_close(operator, dense, rtol=1e-8, atol=1e-12)
    outside = Xt - (Xt @ Q) @ Q.T
    torch.testing.assert_close(dense, outside.norm(dim=1), rtol=1e-10, atol=0)
    # min_removed beyond the data span would remove flat directions: refused on both
    for h in (H, H.operator()):
        with pytest.raises(ValueError, match="eigenvalues <= 0"):
            hessext.extrapolation_score(model, Xt, hessian=h, threshold=0.0, min_removed=4)


def test_tied_eigenvalues_removed_together_or_refused():
    """A cluster of equal eigenvalues spans an eigenspace of which any basis is as good: the
    threshold rule removes it whole (min_removed inside it completes it) and an explicit
    n_removed that would split it is refused."""
    P = 6
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    lam = torch.tensor([5.0, 3.0, 3.0, 3.0, 1.0, 0.5], dtype=torch.float64)
    H = hessext.Hessian.from_matrix(Q @ torch.diag(lam) @ Q.T)
    model = nn.Linear(P, 1, bias=False).double()
    x = torch.randn(4, P, dtype=torch.float64)
    got = hessext.extrapolation_score(model, x, hessian=H, threshold=4.0, min_removed=2)
    assert got.n_removed == 4  # 5, then all three 3's
    for h in (H, H.operator()):
        with pytest.raises(ValueError, match="n_removed=2 splits tied eigenvalues"):
            hessext.extrapolation_score(model, x, hessian=h, n_removed=2)
    # the whole cluster on both paths (Lanczos restarts on the invariant subspace it exhausts,
    # so at this P it finds every copy of the tied eigenvalue)
    dense = hessext.extrapolation_score(model, x, hessian=H, threshold=2.0, min_removed=0)
    lanczos = hessext.extrapolation_score(model, x, hessian=H.operator(), threshold=2.0, min_removed=0)
    assert dense.n_removed == lanczos.n_removed == 4
    torch.testing.assert_close(lanczos, dense, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    values=st.lists(st.floats(-2.0, 5.0, allow_nan=False), min_size=1, max_size=12),
    ties=st.lists(st.integers(0, 11), max_size=4),
    threshold=st.sampled_from([0.0, 0.01, 0.5, 1.0, 3.0]),
    min_removed=st.integers(0, 4),
    noise=st.floats(0.0, 1.0),
)
def test_removed_count_is_stable_below_the_resolution(values, ties, threshold, min_removed, noise):
    """Properties of the one rule on arbitrary spectra with ties: perturbing every eigenvalue by
    less than a tenth of the resolution (what separates the dense eigendecomposition from
    Lanczos) never changes the count; the count never splits a cluster; everything counted
    above the threshold is above t + resolution unless min_removed forced it."""
    v = sorted(values, reverse=True)
    for i in ties:  # make ties: copy a neighbour's value
        if 0 < i < len(v):
            v[i] = v[i - 1]
    v = torch.tensor(sorted(v, reverse=True), dtype=torch.float64)
    res = RESOLUTION * max(float(v[0]), 0.0)
    m = removed_count(v, threshold, min_removed, res)
    jitter = torch.linspace(-0.1, 0.1, len(v), dtype=torch.float64) * noise * res
    assert removed_count(torch.sort(v + jitter, descending=True).values, threshold, min_removed, res) == m
    if 0 < m < len(v):
        assert float(v[m - 1] - v[m]) > res  # never inside a cluster
    if m > min_removed:
        assert bool((v[:m] > threshold + res).all())
    assert m >= min(min_removed, len(v))
