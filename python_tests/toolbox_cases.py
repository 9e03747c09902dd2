"""Small problems and independent float64 truths for the toolbox tests.

The truths use nothing of hessext: torch.func.hessian of the mean loss and per-example gradients
from one torch.autograd.grad call per example.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def tiny_classifier(seed: int = 0, n: int = 12, m: int = 4, dtype=torch.float64):
    """MLP 3-4-3 (tanh), P = 31, cross-entropy; (model, loss_fn, (X, y), (Xt, yt))."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    Xt = torch.randn(m, 3, generator=g, dtype=dtype)
    yt = torch.randint(0, 3, (m,), generator=g)
    return model, nn.CrossEntropyLoss(), (X, y), (Xt, yt)


def flat_theta(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _assign(model, flat):
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[i:i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


def reference_hessian(model, loss_fn, data, l2: float = 0.0) -> torch.Tensor:
    """∇²[mean loss + (l2/2)‖θ‖²] in float64, [P, P]."""
    X, y = data
    theta = flat_theta(model).to(torch.float64)
    m64 = _copy64(model)

    def objective(flat):
        out = torch.func.functional_call(m64, _assign(m64, flat), (X.to(torch.float64),))
        return loss_fn(out, y) + 0.5 * l2 * flat.pow(2).sum()

    return torch.func.hessian(objective)(theta)


def reference_grads(model, loss_fn, X, y, l2: float = 0.0) -> torch.Tensor:
    """[N, P] float64 rows ∇ℓ(z_i) + l2·θ, one autograd call per example."""
    m64 = _copy64(model)
    params = list(m64.parameters())
    theta = flat_theta(m64)
    rows = []
    for i in range(X.shape[0]):
        loss = loss_fn(m64(X[i:i + 1].to(torch.float64)), y[i:i + 1])
        g = torch.autograd.grad(loss, params)
        rows.append(torch.cat([t.reshape(-1) for t in g]) + l2 * theta)
    return torch.stack(rows)


def reference_output_grads(model, X, pick) -> torch.Tensor:
    """[N, P] float64 rows ∇θ pick(model(x_i)[0])."""
    m64 = _copy64(model)
    params = list(m64.parameters())
    rows = []
    for i in range(X.shape[0]):
        g = torch.autograd.grad(pick(m64(X[i:i + 1].to(torch.float64))[0]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def _copy64(model):
    import copy

    return copy.deepcopy(model).to(torch.float64).eval()


def model_state(model):
    """Everything the toolbox promises to leave alone."""
    return ([p.detach().clone() for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for m in model.modules()])


def assert_same_state(model, state):
    params, grads, modes, hooks = model_state(model)
    for a, b in zip(params, state[0]):
        assert torch.equal(a, b)
    for a, b in zip(grads, state[1]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert modes == state[2]
    assert hooks == state[3]


def pearson(a, b) -> float:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def spearman(a, b) -> float:
    rank = lambda v: torch.as_tensor(v).argsort().argsort().to(torch.float64)
    return pearson(rank(a), rank(b))


def logistic_problem(n=200, d=6, seed=0, m=5):
    """Non-separable binary data: (X [n, d], y [n], Xt [m, d], yt [m]), float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + m, d, generator=g, dtype=torch.float64)
    beta = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(X @ beta + 0.3), generator=g)
    return X[:n], y[:n], X[n:], y[n:]


def newton_logistic(Xa, y, w, l2, theta):
    """argmin (1/Σw) Σ w_i BCE(x_iᵀθ, y_i) + (l2/2)‖θ‖², to gradient norm 1e-12."""
    total = w.sum()
    for _ in range(50):
        p = torch.sigmoid(Xa @ theta)
        grad = Xa.T @ (w * (p - y)) / total + l2 * theta
        if grad.norm() < 1e-12:
            return theta
        hess = (Xa.T * (w * p * (1 - p))) @ Xa / total + l2 * torch.eye(theta.numel(), dtype=theta.dtype)
        theta = theta - torch.linalg.solve(hess, grad)
    raise AssertionError("Newton did not converge")


@contextlib.contextmanager
def single_thread():
    """Many tiny retraining steps: intra-op threads only add synchronisation (4× slower on a
    loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
