"""smooth_hessian against closed forms (sums of ReLU units, the four-quadrant function,
quadratics) at the Monte-Carlo rate, its reproducibility, the model guard and bad inputs; the
SoftPlus/vanilla baselines; P-MSE; the exact trust-region step against brute force."""

import math

import pytest
import torch
from torch import nn

import hessext
from hessext import _extension, testing
from hessext.smoothhess import vanilla_hessian
from hessext.testing import run_python

PHI = lambda t: torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)  # noqa: E731


def relu_units(D=4, J=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(J, D, generator=g, dtype=torch.float64)
    b = torch.randn(J, generator=g, dtype=torch.float64) * 0.3
    a = torch.randn(J, generator=g, dtype=torch.float64)
    f = lambda x: torch.relu(x @ W.T + b) @ a  # noqa: E731

    def exact(x, sigma):  # Σ_j a_j w_j w_jᵀ φ(u_j/s_j)/s_j, u = w·x + b, s = √σ‖w‖
        u = x @ W.T + b
        s = math.sqrt(sigma) * W.norm(dim=1)
        coef = a * PHI(u / s) / s
        return torch.einsum("...j,jd,je->...de", coef, W, W)

    return f, exact


def test_relu_sum_closed_form_within_stderr_and_rate():
    f, exact = relu_units()
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.5
    sigma = 0.4
    H = exact(x, sigma)
    errs, ses = [], []
    for n in (2**11, 2**15):
        r = hessext.smooth_hessian(f, x, sigma=sigma, n_samples=n, seed=3)
        err = r.hessian - H
        # entrywise within 6 standard errors (batch means, 7 degrees of freedom)
        assert (err.abs() <= 6 * r.hessian_stderr + 1e-12).all()
        errs.append(err.pow(2).sum().sqrt())
        ses.append(r.hessian_stderr.pow(2).sum().sqrt())
    # 16x the samples: the error (a sum over 96 entries, concentrated) and the reported
    # standard error both shrink ~4x = sqrt(16)
    assert 2.0 < errs[0] / errs[1] < 8.0
    assert 2.5 < ses[0] / ses[1] < 6.5
    # and the reported standard error is the size of the actual error
    assert 0.4 < errs[1] / ses[1] < 2.5


@pytest.mark.parametrize("sigma", [0.01, 1.0, 100.0])
def test_four_quadrant_at_origin(sigma):
    c = torch.tensor([5.0, -10.0, 12.0, 3.0], dtype=torch.float64)

    def f(x):
        q = torch.where(x[:, 0] >= 0, torch.where(x[:, 1] >= 0, 0, 3), torch.where(x[:, 1] >= 0, 1, 2))
        return c[q] * x[:, 0] * x[:, 1]

    r = hessext.smooth_hessian(f, torch.zeros(2, dtype=torch.float64), sigma=sigma, n_samples=2**16, seed=11)
    want = torch.tensor([[24 / (2 * math.pi), 2.5], [2.5, 24 / (2 * math.pi)]], dtype=torch.float64)
    assert ((r.hessian - want).abs() <= 5 * r.hessian_stderr).all()
    # f is homogeneous of degree 2: ∇f(√σ z) = √σ ∇f(z), so with the same z the estimate is the
    # same for every σ (up to rounding)
    r1 = hessext.smooth_hessian(f, torch.zeros(2, dtype=torch.float64), sigma=1.0, n_samples=2**16, seed=11)
    assert torch.allclose(r.hessian, r1.hessian, rtol=1e-10, atol=1e-12)


def test_quadratic_every_sigma():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = A + A.T
    bvec = torch.randn(5, generator=g, dtype=torch.float64)
    f = lambda x: 0.5 * ((x @ A) * x).sum(1) + x @ bvec  # noqa: E731
    x = torch.randn(2, 5, generator=g, dtype=torch.float64)
    results = [hessext.smooth_hessian(f, x, sigma=s, n_samples=4096, seed=5) for s in (1e-4, 1.0, 1e3)]
    # z (h+ - h-)ᵀ = 2√σ z zᵀ A: the estimate is the same for every σ, up to rounding
    for r in results[1:]:
        assert torch.allclose(r.hessian, results[0].hessian, rtol=1e-9, atol=1e-9)
    r = results[1]
    assert ((r.hessian - A).abs() <= 6 * r.hessian_stderr).all()
    # antithetic pairs make SmoothGrad of a quadratic exact: (g+ + g-)/2 = Ax + b
    assert torch.allclose(r.grad, x @ A + bvec, rtol=1e-12, atol=1e-12)


def mlp(dtype=torch.float64, seed=0, widths=(12, 16, 8, 3)):
    torch.manual_seed(seed)
    return testing.mlp(widths, nn.ReLU).to(dtype)


@pytest.mark.parametrize("output", ["logit", "prob", 1])
def test_first_linear_shortcut_equals_generic_path(output):
    net = mlp()
    x = torch.randn(3, 12, dtype=torch.float64)
    fast = hessext.smooth_hessian(net, x, sigma=0.3, n_samples=512, output=output, seed=4)
    # a plain function hides the Sequential: the generic input-gradient path
    slow = hessext.smooth_hessian(lambda v: net(v), x, sigma=0.3, n_samples=512, seed=4, output=output)
    assert torch.allclose(fast.hessian, slow.hessian, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fast.grad, slow.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fast.hessian_stderr, slow.hessian_stderr, rtol=1e-5, atol=1e-12)


@pytest.mark.skipif(
    not _extension.loaded,
    reason="a property of the compiled op: the pure-torch "
    "fallback's GEMMs round differently with the thread count",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bit_identical_across_threads_and_batch_sizes(dtype):
    net = mlp(dtype)
    x = torch.randn(3, 12, dtype=dtype)
    threads = torch.get_num_threads()
    runs = []
    try:
        for t, bs in [(1, None), (2, None), (2, 64), (1, 100)]:
            torch.set_num_threads(t)
            runs.append(hessext.smooth_hessian(net, x, sigma=0.2, n_samples=1000, seed=9, batch_size=bs))
    finally:
        torch.set_num_threads(threads)
    for r in runs[1:]:
        for a, b in zip(r[:4], runs[0][:4]):
            assert torch.equal(a, b)


def test_batch_equals_single_points():
    net = mlp()
    x = torch.randn(3, 12, dtype=torch.float64)
    whole = hessext.smooth_hessian(net, x, sigma=0.2, n_samples=256, seed=1)
    # point index b keys the directions, so point 0 alone matches row 0 of the batch
    alone = hessext.smooth_hessian(net, x[0], sigma=0.2, n_samples=256, seed=1)
    assert torch.allclose(alone.hessian, whole.hessian[0], rtol=1e-12, atol=1e-15)


def test_model_untouched_also_on_error():
    net = mlp()
    net.train()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    hook = net[2].register_forward_hook(lambda m, i, o: None)
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(2, 12, dtype=torch.float64)
    hessext.smooth_hessian(net, x, sigma=0.1, n_samples=64)
    with pytest.raises(ValueError, match="one scalar per row"):
        hessext.smooth_hessian(net, x, sigma=0.1, n_samples=64, output=lambda out: out)
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(net[0].weight.grad, torch.ones_like(net[0].weight))
    assert all(p.grad is None for p in list(net.parameters())[1:])
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert len(net[2]._forward_hooks) == 1
    hook.remove()


def test_bad_inputs():
    f = lambda x: (x**2).sum(1)  # noqa: E731
    x = torch.zeros(3, dtype=torch.float64)
    for kwargs, match in [
        (dict(sigma=0.0, n_samples=4), "sigma"),
        (dict(sigma=-1.0, n_samples=4), "sigma"),
        (dict(sigma=float("nan"), n_samples=4), "sigma"),
        (dict(sigma=1.0, n_samples=5), "even"),
        (dict(sigma=1.0, n_samples=0), "n_samples"),
        (dict(sigma=1.0, n_samples=4, batch_size=0), "batch_size"),
        (dict(sigma=1.0, n_samples=4, output="softmax"), "output"),
    ]:
        with pytest.raises(ValueError, match=match):
            hessext.smooth_hessian(f, x, **kwargs)
    with pytest.raises(TypeError, match="floating"):
        hessext.smooth_hessian(f, torch.zeros(3, dtype=torch.int64), sigma=1.0, n_samples=4)
    with pytest.raises(ValueError, match="shape"):
        hessext.smooth_hessian(f, torch.zeros(0, 3), sigma=1.0, n_samples=4)
    # odd n_samples is fine without antithetic pairs
    r = hessext.smooth_hessian(f, x, sigma=1.0, n_samples=5, antithetic=False, return_stderr=False)
    assert r.hessian.shape == (3, 3) and r.hessian_stderr is None


def test_softplus_and_vanilla_baselines():
    D, J, beta = 5, 4, 3.0
    net = nn.Sequential(nn.Linear(D, J), nn.ReLU(), nn.Linear(J, 1)).double()
    x = torch.randn(2, D, dtype=torch.float64)
    r = hessext.softplus_hessian(net, x, beta=beta)
    W, b, a = net[0].weight, net[0].bias, net[2].weight[0]
    u = x @ W.T + b
    s = torch.sigmoid(beta * u)
    want = torch.einsum("nj,jd,je->nde", a * beta * s * (1 - s), W, W)
    assert torch.allclose(r.hessian, want.detach(), rtol=1e-10, atol=1e-12)
    assert torch.allclose(r.grad, (s * a) @ W.detach(), rtol=1e-10, atol=1e-12)
    assert not r.hessian.requires_grad and not r.grad.requires_grad  # numbers, not graphs
    assert isinstance(net[1], nn.ReLU)  # the model was not edited
    assert torch.allclose(net(x), torch.relu(u) @ net[2].weight.T + net[2].bias)
    v = vanilla_hessian(net, x)
    assert torch.equal(v.hessian, torch.zeros_like(v.hessian))  # ReLU: zero almost everywhere


def test_pmse_quadratic_model_is_exact_to_second_order():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = A + A.T
    f = lambda x: 0.5 * ((x @ A) * x).sum(1)  # noqa: E731
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    grad, hess = x @ A, A.expand(3, 4, 4)
    for sampling in ("radius-uniform", "volume-uniform"):
        r = hessext.pmse(f, x, grad, hess, radius=0.5, n_samples=256, sampling=sampling)
        assert r.second_order < 1e-25 and r.first_order > 1e-6
        assert r.first_order_per_point.shape == (3,)


def _model_value(g, H, d):
    return g @ d + 0.5 * d @ H @ d


@pytest.mark.parametrize("D", [2, 3])
def test_trust_region_against_brute_force(D):
    g = torch.Generator().manual_seed(D)
    for _trial in range(5):
        Hm = torch.randn(D, D, generator=g, dtype=torch.float64)
        Hm = Hm + Hm.T
        gv = torch.randn(D, generator=g, dtype=torch.float64)
        r = 0.7
        step = hessext.second_order_step(gv, Hm, r)
        assert step.delta.norm() <= r * (1 + 1e-12)
        assert torch.allclose(step.value, _model_value(gv, Hm, step.delta), rtol=1e-12, atol=1e-14)
        # brute force over the ball: dense sphere of radii (2-D grid / 3-D Fibonacci sphere)
        if D == 2:
            t = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)
            dirs = torch.stack([t.cos(), t.sin()], 1)
        else:
            n = 40000
            i = torch.arange(n, dtype=torch.float64) + 0.5
            phi, theta = torch.acos(1 - 2 * i / n), math.pi * (1 + 5**0.5) * i
            dirs = torch.stack([theta.cos() * phi.sin(), theta.sin() * phi.sin(), phi.cos()], 1)
        radii = torch.linspace(0, r, 41, dtype=torch.float64)
        pts = (radii[:, None, None] * dirs[None]).reshape(-1, D)
        vals = pts @ gv + 0.5 * ((pts @ Hm) * pts).sum(1)
        assert step.value <= vals.min() + 1e-12
        assert step.value >= vals.min() - 0.02 * (gv.norm() * r + Hm.norm() * r * r)


def test_trust_region_interior_newton_and_hard_case():
    Hm = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    gv = torch.tensor([0.1, -0.2], dtype=torch.float64)
    step = hessext.second_order_step(gv, Hm, 10.0)
    assert torch.allclose(step.delta, -torch.linalg.solve(Hm, gv), rtol=1e-12)
    # hard case: g ⟂ the negative-curvature direction
    Hm = torch.diag(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    gv = torch.tensor([0.0, 1.0], dtype=torch.float64)
    step = hessext.second_order_step(gv, Hm, 2.0)
    assert torch.allclose(
        step.delta.abs(), torch.tensor([math.sqrt(4 - 1 / 9), 1 / 3], dtype=torch.float64), rtol=1e-10
    )
    assert step.delta[1] < 0
    # batched input
    b = hessext.second_order_step(gv.expand(3, 2), Hm.expand(3, 2, 2), 2.0)
    assert b.delta.shape == (3, 2) and b.value.shape == (3,)
    with pytest.raises(ValueError, match="radius"):
        hessext.second_order_step(gv, Hm, 0.0)


_PARITY = """
import torch, hessext
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)).double()
x = torch.randn(2, 6, dtype=torch.float64)
r = hessext.smooth_hessian(net, x, sigma=0.3, n_samples=300, seed=2)
torch.save([r.hessian, r.grad, r.hessian_stderr], {path!r})
"""


def test_fallback_parity(tmp_path):
    results = []
    for disable in (False, True):
        path = str(tmp_path / f"r{int(disable)}.pt")
        run_python(_PARITY.format(path=path), disable_ext=disable)
        results.append(torch.load(path))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("with_weight", [False, True])
def test_stderr_contrasts_equal_naive_batch_means(with_weight):
    # _finish forms the batch-means variance from G - 1 orthonormal contrasts through W; the
    # textbook form: group Hessians sym(S_g W)/n_g, their weighted squared deviations
    from hessext.smoothhess.estimator import _finish, _group_sizes

    g = torch.Generator().manual_seed(0)
    b, M, D, K, n_pairs, tile, sigma, A = 2, 8, 5, 3 if with_weight else 5, 100, 8, 0.3, 2
    hess_acc = torch.randn(b, M, D, K, generator=g, dtype=torch.float64) + 2.0
    grad_acc = torch.randn(b, M, K, generator=g, dtype=torch.float64)
    W = torch.randn(K, D, generator=g, dtype=torch.float64) if with_weight else None
    hess = torch.empty(b, D, D, dtype=torch.float64)
    hess_se = torch.empty_like(hess)
    grad, grad_se = _finish(hess_acc, grad_acc, n_pairs, tile, A, sigma, W, hess, hess_se, True)
    n_g = torch.tensor(_group_sizes(n_pairs, tile, M), dtype=torch.float64)
    Wm = W if W is not None else torch.eye(D, dtype=torch.float64)
    scale = 1 / (math.sqrt(sigma) * A)
    H_g = hess_acc @ Wm / n_g[:, None, None]
    H_g = 0.5 * (H_g + H_g.transpose(-1, -2)) * scale
    assert torch.allclose(hess, (n_g[:, None, None] * H_g).sum(1) / n_pairs, rtol=1e-12)
    var = (n_g[:, None, None] * (H_g - hess[:, None]) ** 2).sum(1) / (M - 1)
    assert torch.allclose(hess_se, (var / n_pairs).sqrt(), rtol=1e-10)
    G_g = grad_acc @ Wm / n_g[:, None] / A
    var_g = (n_g[:, None] * (G_g - grad[:, None]) ** 2).sum(1) / (M - 1)
    assert torch.allclose(grad_se, (var_g / n_pairs).sqrt(), rtol=1e-10)


# ---- σ sweeps in one call ----------------------------------------------------------------------


@pytest.mark.parametrize("generic", [False, True])
def test_sigma_sweep_equals_separate_calls(generic):
    net = mlp()
    model = (lambda v: net(v)) if generic else net  # a plain function hides the first Linear
    x = torch.randn(2, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    sigmas = [0.01, 0.2, 1.5]
    sweep = hessext.smooth_hessian(model, x, sigma=sigmas, n_samples=512, seed=7, batch_size=300)
    assert sweep.hessian.shape == (3, 2, 12, 12) and sweep.grad.shape == (3, 2, 12)
    assert sweep.sigma == tuple(sigmas)
    for k, s in enumerate(sigmas):
        alone = hessext.smooth_hessian(model, x, sigma=s, n_samples=512, seed=7)
        # the same directions, the same copies: equal up to the rounding of batched GEMMs
        for a, b in zip(sweep[:4], alone[:4]):
            torch.testing.assert_close(a[k], b, rtol=1e-9, atol=1e-12)


def test_sigma_sweep_of_a_homogeneous_function_is_flat_and_exact():
    from hessext.datasets.four_quadrant import four_quadrant, smoothed_hessian_at_origin

    sigmas = torch.logspace(-3, 0, 6, dtype=torch.float64)
    r = hessext.smooth_hessian(
        four_quadrant, torch.zeros(2, dtype=torch.float64), sigma=sigmas, n_samples=2**15
    )
    assert r.hessian.shape == (6, 2, 2)
    # 2-homogeneous: ∇f(√σ z) = √σ ∇f(z), so with shared z every σ gives the same estimate
    torch.testing.assert_close(r.hessian, r.hessian[:1].expand(6, 2, 2), rtol=1e-10, atol=1e-12)
    assert ((r.hessian - smoothed_hessian_at_origin()).abs() <= 5 * r.hessian_stderr).all()


def test_sigma_sweep_bad_values():
    f = lambda x: (x**2).sum(1)  # noqa: E731
    x = torch.zeros(3, dtype=torch.float64)
    for bad in ([], [0.1, 0.0], [float("inf")], ["a"]):
        with pytest.raises(ValueError, match="sigma"):
            hessext.smooth_hessian(f, x, sigma=bad, n_samples=4)


# ---- P-MSE ---------------------------------------------------------------------------------------


def test_ball_perturbations_distribution():
    from hessext.smoothhess import ball_perturbations

    n, D, r = 20000, 5, 0.7
    d = ball_perturbations(0, 0, n, D, radius=r, sampling="radius-uniform", seed=1)
    rho = d.norm(dim=1)
    assert rho.max() <= r
    # ρ ~ U[0, r]: mean r/2 with standard error r/√(12 n); directions: mean 0 per coordinate
    assert abs(rho.mean() - r / 2) < 5 * r / math.sqrt(12 * n)
    u = d / rho[:, None]
    assert (u.mean(0).abs() < 5 / math.sqrt(D * n)).all()
    v = ball_perturbations(0, 0, n, D, radius=r, sampling="volume-uniform", seed=1).norm(dim=1)
    # uniform in the ball: P(ρ ≤ r/2) = 2^-D
    frac = float((v <= r / 2).double().mean())
    assert abs(frac - 2.0**-D) < 5 * math.sqrt(2.0**-D / n)
    # counter-based: a chunk is the same whatever the start of the call that drew it
    part = ball_perturbations(0, 100, 50, D, radius=r, sampling="radius-uniform", seed=1)
    torch.testing.assert_close(part, d[100:150], rtol=0, atol=0)


def test_pmse_stacked_models_and_chunking():
    net = mlp()
    x = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g = torch.randn(2, 3, 12, dtype=torch.float64)
    H = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    both = hessext.pmse(net, x, g, H, radius=0.4, n_samples=700, batch_size=128, seed=2)
    assert both.first_order.shape == (2,) and both.second_order_per_point.shape == (2, 3)
    for m in range(2):
        one = hessext.pmse(net, x, g[m], H[m], radius=0.4, n_samples=700, batch_size=1000, seed=2)
        torch.testing.assert_close(one.first_order, both.first_order[m], rtol=1e-12, atol=0)
        torch.testing.assert_close(one.second_order, both.second_order[m], rtol=1e-12, atol=0)
        assert float(one.second_better) == float(both.second_better[m])
    # by hand for one point: the same perturbations, the errors written out
    from hessext.smoothhess import ball_perturbations

    d = ball_perturbations(1, 0, 700, 12, radius=0.4, sampling="radius-uniform", seed=2)
    with torch.no_grad():
        cls = net(x[1:2]).argmax(1)
        f = net(x[1] + d)[:, cls[0]] - net(x[1:2])[0, cls[0]]
    e1 = (f - d @ g[0, 1]).square().mean()
    e2 = (f - d @ g[0, 1] - 0.5 * ((d @ H[0, 1]) * d).sum(1)).square().mean()
    torch.testing.assert_close(both.first_order_per_point[0, 1], e1, rtol=1e-10, atol=0)
    torch.testing.assert_close(both.second_order_per_point[0, 1], e2, rtol=1e-10, atol=0)
    first_only = hessext.pmse(net, x, g[0], None, radius=0.4, n_samples=700, seed=2)
    assert torch.equal(first_only.second_order, first_only.first_order)


# ---- trust region: optimality conditions, the attack's subspace ---------------------------------


def _assert_more_sorensen(g, H, delta, r, tol=1e-8):
    """δ solves min gᵀδ + ½δᵀHδ, ‖δ‖ ≤ r iff some μ ≥ 0 gives (H + μI)δ = -g, H + μI ⪰ 0 and
    μ(r - ‖δ‖) = 0 (Moré & Sorensen 1983)."""
    n = delta.norm()
    assert n <= r * (1 + 1e-12)
    scale = float(g.norm() + torch.linalg.matrix_norm(H, 2) * r)
    if n < 1e-14:
        mu = 0.0
    else:
        mu = float(-(delta @ (g + H @ delta)) / n**2)
    lam_min = float(torch.linalg.eigvalsh(H)[0])
    assert mu >= -tol * scale
    assert (H @ delta + mu * delta + g).norm() <= tol * scale
    assert lam_min + mu >= -tol * scale
    assert abs(mu * (r - float(n))) <= tol * scale * r


@pytest.mark.parametrize("D", [2, 5, 9])
def test_trust_region_optimality_conditions(D):
    gen = torch.Generator().manual_seed(10 + D)
    for trial in range(8):
        A = torch.randn(D, D, generator=gen, dtype=torch.float64)
        H = A + A.T if trial % 2 else A @ A.T + 0.1 * torch.eye(D, dtype=torch.float64)
        g = torch.randn(D, generator=gen, dtype=torch.float64) * (0.01 if trial == 3 else 1.0)
        r = [0.05, 0.5, 5.0, 50.0][trial % 4]
        step = hessext.second_order_step(g, H, r)
        _assert_more_sorensen(g, H, step.delta, r)


def test_spectral_truncation_rule():
    from hessext.smoothhess.trust_region import spectral_truncation

    lam = torch.tensor([[0.5, -6.0, 3.0, 0.2, 0.3]], dtype=torch.float64)
    # |λ| sorted: 6, 3, 0.5, 0.3, 0.2 (sum 10); cumulative 6, 9, 9.5, 9.8, 10: > 0.9·10 first at
    # index 2 (9.5), so k = 2 + extra
    assert spectral_truncation(lam, 0.9, 1).tolist() == [3]
    assert spectral_truncation(lam, 0.5, 0).tolist() == [1]  # index 0, but at least one direction
    assert spectral_truncation(lam, 0.98, 10).tolist() == [5]  # at most D
    assert spectral_truncation(torch.zeros(1, 4), 0.98, 2).tolist() == [2]


def test_subspace_step_solves_the_reduced_problem():
    gen = torch.Generator().manual_seed(4)
    D = 12
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    lam = torch.tensor([9.0, -7.0, 3.0, -1.0] + [0.01] * 8, dtype=torch.float64)
    H = Q @ torch.diag(lam) @ Q.T
    g = torch.randn(D, generator=gen, dtype=torch.float64)
    step = hessext.smoothhess.subspace_second_order_step(g, H, 0.8, energy=0.9, extra=1)
    # |λ|: 9, 7, 3, 1, 0.01·8 (sum 20.08): cumulative > 18.07 first at index 2, k = 3
    assert int(step.n_kept) == 3
    Vk = Q[:, :3]  # the eigenvectors of 9, -7, 3
    # δ lies in span V_k and solves the reduced trust-region problem there
    torch.testing.assert_close(Vk @ (Vk.T @ step.delta), step.delta, rtol=0, atol=1e-12)
    _assert_more_sorensen(Vk.T @ g, torch.diag(lam[:3]), Vk.T @ step.delta, 0.8)
    # all directions kept: the full exact step
    full = hessext.smoothhess.subspace_second_order_step(g, H, 0.8, energy=1.0, extra=D)
    torch.testing.assert_close(full.delta, hessext.second_order_step(g, H, 0.8).delta, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="energy"):
        hessext.smoothhess.subspace_second_order_step(g, H, 0.8, energy=0.0)
