"""Influence functions, RelatIF and self-influence against independent truths.

* Dense float64 linear algebra on a tiny MLP (torch.func.hessian, one autograd call per example)
  for every solve method and option; float64 agreement is to rounding (rel. 1e-10, or the
  conjugate-gradient tolerance times the condition number for 'cg').
* Actual leave-one-out retraining: L2-regularised logistic regression solved by Newton's method
  to a gradient norm of 1e-12 (Koh & Liang's classic check), and a small tanh MLP retrained by
  L-BFGS from its trained weights.
"""

from __future__ import annotations

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
    pearson,
    reference_grads,
    reference_hessian,
    single_thread,
    tiny_classifier,
)

EPS32 = torch.finfo(torch.float32).eps


def _damped_truth(model, loss_fn, train, test, l2, damping):
    H = reference_hessian(model, loss_fn, train, l2=l2)
    G = reference_grads(model, loss_fn, *train, l2=l2)
    Gt = reference_grads(model, loss_fn, *test)  # the test loss carries no regulariser
    A = H + damping * torch.eye(H.shape[0], dtype=torch.float64)
    return H, G, Gt, A


def _rel(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("method", ["cholesky", "eigh", "cg"])
def test_influence_relatif_self_influence_match_dense_formulas(method, l2):
    model, loss_fn, train, test = tiny_classifier()
    reg = L2(l2) if l2 else None
    H, G, Gt, _ = _damped_truth(model, loss_fn, train, test, l2, 0.0)
    lam = torch.linalg.eigvalsh(H)
    damping = max(0.0, -float(lam[0])) + 0.5
    A = H + damping * torch.eye(H.shape[0], dtype=torch.float64)
    n = train[0].shape[0]
    expected_if = G @ torch.linalg.solve(A, Gt.T) / n
    expected_norms = torch.linalg.vector_norm(torch.linalg.solve(A, G.T), dim=0)
    expected_self = (G * torch.linalg.solve(A, G.T).T).sum(1)
    # CG stops at relative residual 1e-10: the solution error is at most κ(A) times that
    kappa = float((lam[-1] + damping) / (lam[0] + damping))
    tol = 1e-10 if method != "cg" else 10 * kappa * 1e-10
    Hobj = hessext.Hessian.from_matrix(H)
    for hessian in (None, Hobj, H):
        got = hessext.influence(
            model, loss_fn, train, test, hessian=hessian, damping=damping, method=method, regularizer=reg
        )
        assert got.shape == (n, test[0].shape[0]) and got.dtype == torch.float64
        assert _rel(got, expected_if) <= tol
        assert got.solver.method == method and got.solver.damping == damping
    got = hessext.relatif(
        model,
        loss_fn,
        train,
        test,
        hessian=Hobj,
        damping=damping,
        method=method,
        regularizer=reg,
        batch_size=5,
    )
    assert _rel(got, expected_if / expected_norms[:, None]) <= tol
    got = hessext.self_influence(
        model, loss_fn, train, hessian=Hobj, damping=damping, method=method, regularizer=reg, batch_size=5
    )
    assert got.shape == (n,)
    assert _rel(got, expected_self) <= tol


def test_pinv_drops_what_it_says():
    model, loss_fn, train, test = tiny_classifier()
    H, G, Gt, _ = _damped_truth(model, loss_fn, train, test, 0.0, 0.0)
    lam, U = torch.linalg.eigh(H)
    rcond = 1e-3
    keep = lam.abs() > rcond * lam.abs().max()
    pinv = U[:, keep] @ torch.diag(1 / lam[keep]) @ U[:, keep].T
    n = train[0].shape[0]
    with pytest.warns(RuntimeWarning, match="dropped"):
        got = hessext.influence(model, loss_fn, train, test, hessian=H, method="pinv", rcond=rcond)
    # the kept spectrum spans 1e3: rounding in the eigenvectors is amplified that much at most
    assert _rel(got, G @ pinv @ Gt.T / n) <= 1e-10 * 1e3
    info = got.solver
    assert info.method == "pinv" and info.n_dropped == int((~keep).sum()) and info.rcond == rcond
    assert abs(info.lambda_min - float(lam[0])) <= 1e-10 * float(lam.abs().max())
    assert "pseudo-inverse dropping" in str(info)


def test_matrix_free_operator_uses_cg():
    model, loss_fn, train, test = tiny_classifier()
    H, G, Gt, A = _damped_truth(model, loss_fn, train, test, 0.0, 1.0)
    got = hessext.influence(
        model, loss_fn, train, test, hessian=hessext.Hessian.from_matrix(H).operator(), damping=1.0
    )
    assert got.solver.method == "cg"
    lam = torch.linalg.eigvalsh(A)
    assert (
        _rel(got, G @ torch.linalg.solve(A, Gt.T) / train[0].shape[0]) <= 10 * float(lam[-1] / lam[0]) * 1e-10
    )
    with pytest.raises(ValueError, match="dense"):
        hessext.influence(
            model,
            loss_fn,
            train,
            test,
            hessian=hessext.Hessian.from_matrix(H).operator(),
            damping=1.0,
            method="eigh",
        )


def test_float32_model_within_float32_error():
    model64, loss_fn, train, test = tiny_classifier()
    model32 = tiny_classifier(dtype=torch.float32)[0]
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    H, G, Gt, A = _damped_truth(model32, loss_fn, train, test, 0.0, 1.0)
    lam = torch.linalg.eigvalsh(A)
    expected = G @ torch.linalg.solve(A, Gt.T) / train[0].shape[0]
    got = hessext.influence(
        model32, loss_fn, (train[0].float(), train[1]), (test[0].float(), test[1]), hessian=H, damping=1.0
    )
    # float32 gradients are exact to a few eps32; the solve amplifies by at most κ
    assert _rel(got, expected) <= 100 * float(lam[-1] / lam[0]) * EPS32


def test_sign_convention_and_top_k():
    model, loss_fn, train, test = tiny_classifier()
    scores = hessext.influence(model, loss_fn, train, test, damping=2.0)
    values, idx = hessext.most_helpful(scores, 3)
    assert values.shape == idx.shape == (test[0].shape[0], 3)
    for j in range(test[0].shape[0]):
        col = scores[:, j]
        assert torch.equal(values[j], col.sort(descending=True).values[:3])
        assert torch.equal(col[idx[j]], values[j])
    values, idx = hessext.most_harmful(scores, 2)
    assert torch.equal(values[0], scores[:, 0].sort().values[:2])
    with pytest.raises(ValueError, match="most_helpful: k"):
        hessext.most_helpful(scores, 0)
    with pytest.raises(ValueError, match="most_harmful: scores"):
        hessext.most_harmful(scores[:, 0], 1)


def test_bad_inputs_get_clear_errors_and_leave_the_model_alone():
    model, loss_fn, (X, y), test = tiny_classifier()
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model.register_forward_hook(lambda *a: None)
    state = model_state(model)
    H = reference_hessian(model, loss_fn, (X, y))
    lam_min = float(torch.linalg.eigvalsh(H)[0])
    assert lam_min < 0  # a trained-looking indefinite Hessian
    cases = [
        (dict(train=(X, y[:-1])), "influence: train: targets has batch size 11 but inputs has 12"),
        (dict(test=(test[0], test[1][:1])), "influence: test"),
        (dict(hessian=H[:-1, :-1]), "Hessian is over 30 parameters .* number 31"),
        (dict(hessian=H[:, :-1]), "square"),
        (
            dict(hessian=H, damping=0.5 * abs(lam_min), method="cholesky"),
            f"lambda_min\\(H\\) = {lam_min:.6g}",
        ),
        (dict(hessian=H, damping=0.5 * abs(lam_min), method="eigh"), "not positive definite"),
        (dict(train=(X * float("nan"), y)), "non-finite"),
        (dict(hessian=H * float("inf")), "non-finite"),
        (dict(method="lu"), "method must be one of"),
        (dict(damping=-1.0), "damping must be a finite number >= 0"),
    ]
    for overrides, message in cases:
        kwargs = dict(train=(X, y), test=test, hessian=None, damping=0.0)
        kwargs.update(overrides)
        with pytest.raises(ValueError, match=message):
            hessext.influence(model, loss_fn, kwargs.pop("train"), kwargs.pop("test"), **kwargs)
        assert_same_state(model, state)
    hessext.influence(model, loss_fn, (X, y), test, hessian=H, damping=1.0)
    hessext.relatif(model, loss_fn, (X, y), test, hessian=H, damping=1.0)
    hessext.self_influence(model, loss_fn, (X, y), hessian=H, damping=1.0)
    assert_same_state(model, state)


# ---------------------------------------------------------------- leave-one-out retraining


def test_logistic_regression_matches_leave_one_out_retraining():
    X, y, Xt, yt = logistic_problem()
    n, d = X.shape
    l2 = 0.01
    Xa = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    theta = newton_logistic(Xa, y, torch.ones(n, dtype=X.dtype), l2, torch.zeros(d + 1, dtype=X.dtype))
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(theta[:d].unsqueeze(0))
        model.bias.copy_(theta[d:])
    loss_fn = nn.BCEWithLogitsLoss()
    scores = hessext.influence(model, loss_fn, (X, y[:, None]), (Xt, yt[:, None]), regularizer=L2(l2))

    def test_losses(th):
        return nn.functional.binary_cross_entropy_with_logits(Xt @ th[:d] + th[d], yt, reduction="none")

    base = test_losses(theta)
    actual = torch.empty(n, Xt.shape[0], dtype=torch.float64)
    with single_thread():
        for i in range(n):
            w = torch.ones(n, dtype=X.dtype)
            w[i] = 0
            actual[i] = test_losses(newton_logistic(Xa, y, w, l2, theta)) - base
    for j in range(Xt.shape[0]):
        top = scores[:, j].abs().topk(100).indices
        r = pearson(scores[top, j], actual[top, j])
        assert r >= 0.99
        # same sign convention: positive = removing z raises the test loss
        assert (torch.sign(scores[top[:20], j]) == torch.sign(actual[top[:20], j])).all()


def _fit_lbfgs(model, objective, theta):
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1,
        max_iter=2000,
        tolerance_grad=1e-9,
        tolerance_change=0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    opt.step(closure)
    return theta.detach()


def test_mlp_matches_leave_one_out_retraining():
    g = torch.Generator().manual_seed(1)
    n, l2 = 60, 0.02
    X = torch.randn(n + 2, 2, generator=g, dtype=torch.float64)
    y = ((X[:, 0] * X[:, 1] + 0.3 * torch.randn(n + 2, generator=g, dtype=torch.float64)) > 0).double()
    X, y, Xt, yt = X[:n], y[:n], X[n:], y[n:]
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    loss_fn = nn.BCEWithLogitsLoss()

    def unflat(th):
        out, i = {}, 0
        for k, s in zip(names, shapes):
            out[k] = th[i : i + s.numel()].reshape(s)
            i += s.numel()
        return out

    def net(th, inputs):  # the model's forward written out: functional_call is slow per call
        p = list(unflat(th).values())
        return nn.functional.linear(torch.tanh(nn.functional.linear(inputs, p[0], p[1])), p[2], p[3])[:, 0]

    def objective(th, w):
        out = net(th, X)
        per = nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
        return (w * per).sum() / w.sum() + 0.5 * l2 * th.pow(2).sum()

    ones = torch.ones(n, dtype=torch.float64)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with single_thread():
        theta = _fit_lbfgs(model, lambda th: objective(th, ones), theta0)
    with torch.no_grad():
        for p, v in zip(model.parameters(), unflat(theta).values()):
            p.copy_(v)
    scores = hessext.influence(
        model, loss_fn, (X, y[:, None]), (Xt, yt[:, None]), regularizer=L2(l2)
    )  # Cholesky: a strict minimum

    def test_losses(th):
        out = net(th, Xt)
        return nn.functional.binary_cross_entropy_with_logits(out, yt, reduction="none")

    base = test_losses(theta)
    chosen = sorted(set(scores.abs().topk(15, dim=0).indices.reshape(-1).tolist()))
    actual = {}
    with single_thread():
        for i in chosen:
            w = ones.clone()
            w[i] = 0
            actual[i] = test_losses(_fit_lbfgs(model, lambda th: objective(th, w), theta)) - base
    for j in range(Xt.shape[0]):
        top = scores[:, j].abs().topk(15).indices.tolist()
        r = pearson(scores[top, j], torch.stack([actual[i][j] for i in top]))
        assert r >= 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model, loss_fn, train, test = tiny_classifier()
    cpu = hessext.influence(model, loss_fn, train, test, damping=2.0)
    dev = torch.device("cuda")
    model.to(dev)
    got = hessext.influence(
        model, loss_fn, tuple(t.to(dev) for t in train), tuple(t.to(dev) for t in test), damping=2.0
    )
    assert got.device.type == "cuda"
    assert _rel(got.cpu(), cpu) <= 1e-10


def test_fallback_parity_without_the_compiled_core(tmp_path):
    """The same influence, RUE and extrapolation scores with HESSEXT_DISABLE_EXT=1."""
    from hessext.testing import run_python

    code = (
        "import sys, torch, hessext\n"
        "from hessext.testing import tiny_classifier\n"
        "model, loss_fn, train, test = tiny_classifier(n=20, m=5, dtype=torch.float32)\n"
        "H = hessext.hessian(model, loss_fn, train, progress=False)\n"
        "out = {'if': hessext.influence(model, loss_fn, train, test, hessian=H, damping=2.0),\n"
        "       'rue': hessext.rue(model, loss_fn, train, test[0], hessian=H, damping=2.0, n_bootstrap=4),\n"
        "       'es': hessext.extrapolation_score(model, test[0], hessian=H, threshold=0.01)}\n"
        "torch.save({k: v.clone() for k, v in out.items()}, {path!r})\n"
    )
    results = []
    for disable in (False, True):
        path = str(tmp_path / f"out{int(disable)}.pt")
        run_python(code.replace("{path!r}", repr(path)), disable_ext=disable)
        results.append(torch.load(path))
    for key in results[0]:
        # float32 model: kernels and references may order sums differently (a few eps32)
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# structured curvature (K-FAC, EK-FAC, diagonal): every method against the same computation on
# the dense matrix of the same approximation, streaming, query compression, Kronfluence


def _structured_problem(n=30, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    xt = torch.randn(m, 5, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (m,), generator=g)
    return model, nn.CrossEntropyLoss(), (x, y), (xt, yt)


@pytest.mark.parametrize("kind", ["kfac", "ekfac", "diag_ggn"])
def test_every_method_on_structured_curvature_equals_its_dense_matrix(kind):
    model, loss, train, test = _structured_problem()
    C = getattr(hessext, kind)(model, loss, train, progress=False)
    D = hessext.Hessian.from_matrix(C.dense())
    state = model_state(model)
    for damping in (0.05, "heuristic"):
        delta = damping
        if damping == "heuristic":  # the dense twin gets the same per-block shifts
            shifted = C.dense().clone()
            for b in C.blocks:
                shifted[b.index, b.index] += 0.1 * float(b.eigenvalues().mean())
            D_use, delta_dense = hessext.Hessian.from_matrix(shifted), 0.0
        else:
            D_use, delta_dense = D, delta
        got = hessext.influence(model, loss, train, test, hessian=C, damping=delta, progress=False)
        want = hessext.influence(model, loss, train, test, hessian=D_use, damping=delta_dense, progress=False)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))
        assert got.solver.curvature == C.info["kind"]
        for fn in (hessext.relatif, hessext.self_influence):
            args = (train, test) if fn is hessext.relatif else (train,)
            got = fn(model, loss, *args, hessian=C, damping=delta, batch_size=7, progress=False)
            want = fn(model, loss, *args, hessian=D_use, damping=delta_dense, progress=False)
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))
    got = hessext.rue(model, loss, train, test[0], hessian=C, damping=0.05, n_bootstrap=8, progress=False)
    want = hessext.rue(model, loss, train, test[0], hessian=D, damping=0.05, n_bootstrap=8, progress=False)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-14)
    got = hessext.extrapolation_score(model, test[0], hessian=C, n_removed=5)
    want = hessext.extrapolation_score(model, test[0], hessian=D, n_removed=5)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    assert_same_state(model, state)


def test_streaming_influence_equals_the_in_memory_formula():
    model, loss, train, test = _structured_problem(n=23)
    E = hessext.ekfac(model, loss, train, progress=False)
    whole = hessext.influence(model, loss, train, test, hessian=E, damping=0.01, progress=False)
    for chunk in (1, 5, 23):
        part = hessext.influence(
            model, loss, train, test, hessian=E, damping=0.01, batch_size=chunk, progress=False
        )
        assert torch.allclose(part, whole, rtol=1e-12, atol=1e-15)
    # the formula with everything in memory: (1/n) G (C + δI)⁻¹ G_testᵀ
    G = reference_grads(model, loss, *train)
    Gt = reference_grads(model, loss, *test)
    A = E.dense() + 0.01 * torch.eye(E.num_params, dtype=torch.float64)
    want = G @ torch.linalg.solve(A, Gt.T) / train[0].shape[0]
    assert torch.allclose(whole, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))
    # the same with the L2 regulariser in every training gradient
    Er = hessext.ekfac(model, loss, train, regularizer=L2(0.02), progress=False)
    got = hessext.influence(
        model, loss, train, test, hessian=Er, damping=0.01, regularizer=L2(0.02), batch_size=4
    )
    Gr = reference_grads(model, loss, *train, l2=0.02)
    Ar = Er.dense() + 0.01 * torch.eye(E.num_params, dtype=torch.float64)
    want = Gr @ torch.linalg.solve(Ar, Gt.T) / train[0].shape[0]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))


def test_query_rank_compression_and_its_reported_error():
    model, loss, train, test = _structured_problem()
    E = hessext.ekfac(model, loss, train, progress=False)
    full = hessext.influence(model, loss, train, test, hessian=E, damping=0.01, progress=False)
    same = hessext.influence(model, loss, train, test, hessian=E, damping=0.01, query_rank=8, progress=False)
    assert torch.allclose(same, full, rtol=1e-12, atol=1e-15)  # rank >= every layer's min(O, I')
    assert float(same.query_compression.max()) == 0.0
    one = hessext.influence(model, loss, train, test, hessian=E, damping=0.01, query_rank=1, progress=False)
    # the reported error is ‖X − X_1‖_F / ‖X‖_F over the layers' preconditioned query gradients
    Gt = reference_grads(model, loss, *test)
    X = E.solve(Gt.T, damping=0.01)  # [P, m]
    lost = torch.zeros(test[0].shape[0], dtype=torch.float64)
    for b in E.blocks:
        Xb = X[b.index].T.reshape(-1, b.O, b.Ia)
        s = torch.linalg.svdvals(Xb)
        lost += s[:, 1:].square().sum(1)
    assert torch.allclose(one.query_compression, (lost / X.square().sum(0)).sqrt(), rtol=1e-8)
    assert not torch.allclose(one, full)
    with pytest.raises(ValueError, match="query_rank compresses"):
        hessext.influence(
            model, loss, train, test, hessian=hessext.diag_ggn(model, loss, train), query_rank=1, damping=0.1
        )
    with pytest.raises(ValueError, match="query_rank must be a positive integer"):
        hessext.influence(model, loss, train, test, hessian=E, query_rank=0, damping=0.1)
    with pytest.raises(ValueError, match="damping='heuristic'"):
        hessext.influence(model, loss, train, test, damping="heuristic")


def test_ekfac_influence_matches_kronfluence():
    from hessext.testing import kronfluence_pairwise_scores, spearman

    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(200, 6, generator=g), torch.randint(0, 4, (200,), generator=g)
    xt, yt = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    theirs = kronfluence_pairwise_scores(
        model, (x, y), (xt, yt), damping=None, batch_size=64, query_batch_size=8
    )
    E = hessext.ekfac(model, nn.CrossEntropyLoss(), (x, y), progress=False)
    ours = hessext.influence(model, nn.CrossEntropyLoss(), (x, y), (xt, yt), hessian=E, damping="heuristic")
    ours = ours.T * x.shape[0]  # Kronfluence scores g_qᵀ (Λ + δ)⁻¹ g_n without the 1/n
    assert spearman(ours.reshape(-1), theirs.reshape(-1)) >= 0.999
    # the same float32 computation up to summation order
    assert float((ours - theirs).norm() / theirs.norm()) <= 1e-4
