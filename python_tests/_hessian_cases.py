"""Small problems and independent references (torch.func in float64) for the curvature tests."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def mse(out, y):
    return F.mse_loss(out, y, reduction="none").sum(1)


def mlp(act, d_in=4, width=6, c=3):
    return nn.Sequential(nn.Linear(d_in, width), act, nn.Linear(width, 5), act, nn.Linear(5, c))


class CNN1d(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(2 * 5, c)

    def forward(self, x):
        return self.fc(torch.relu(self.pool(self.conv(x))).flatten(1))


class CNN2d(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(2 * 2 * 2, c)

    def forward(self, x):
        return self.fc(torch.tanh(self.pool(self.conv(x))).flatten(1))


def bn_mlp(c=3):
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Softplus(), nn.Linear(6, c))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.3, 0.3)
    return m


def data_for(kind, n, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = {"mlp": (n, 4), "cnn1d": (n, 1, 10), "cnn2d": (n, 1, 6, 6)}[kind]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y_ce = torch.randint(0, c, (n,), generator=g)
    y_mse = torch.randn(n, c, generator=g, dtype=torch.float64)
    return x, y_ce, y_mse


def flat_fn(model):
    """(θ0 [P], f(θ, x)) for a float64 eval-mode copy of model."""
    m = copy.deepcopy(model).double().eval()
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for _, p in m.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    buffers = dict(m.named_buffers())

    def f(theta, x):
        d, o = {}, 0
        for n_, s in zip(names, shapes):
            d[n_] = theta[o:o + s.numel()].view(s)
            o += s.numel()
        return functional_call(m, {**buffers, **d}, (x,))

    return theta0, f


def reference_hessian(model, loss_fn, x, y, l2=0.0):
    theta0, f = flat_fn(model)
    L = lambda th: loss_fn(f(th, x), y).mean() + 0.5 * l2 * th.pow(2).sum()
    return torch.func.hessian(L)(theta0)


def reference_ggn(model, loss, x, y, l2=0.0):
    theta0, f = flat_fn(model)
    J = torch.func.jacrev(lambda th: f(th, x))(theta0)           # [N, C, P]
    out = f(theta0, x)
    N, C = out.shape
    if loss == "ce":
        p = out.softmax(1)
        Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        Lam = 2 * torch.eye(C, dtype=torch.float64).expand(N, C, C)
    G = torch.einsum("ncp,ncd,ndq->pq", J, Lam, J) / N
    return G + l2 * torch.eye(G.shape[0], dtype=torch.float64)


def rel_err(A, B):
    return float((A - B).abs().max() / B.abs().max())


def model_state(model):
    """Everything the caller owns: parameter values/flags, .grad, hooks, modes."""
    return {
        "params": [(p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
                   for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "hooks": [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
                  for m in model.modules()],
    }


def same_state(a, b):
    if a["grad_ids"] != b["grad_ids"] or a["modes"] != b["modes"] or a["hooks"] != b["hooks"]:
        return False
    for (p1, r1, g1), (p2, r2, g2) in zip(a["params"], b["params"]):
        if not torch.equal(p1, p2) or r1 != r2:
            return False
        if (g1 is None) != (g2 is None) or (g1 is not None and not torch.equal(g1, g2)):
            return False
    return True


def uneven(x, y, sizes=(5, 1, 7)):
    """(x, y) split into mini-batches of uneven sizes (5, 1, 7, the rest)."""
    out, s = [], 0
    for k in sizes:
        out.append((x[s:s + k], y[s:s + k]))
        s += k
    out.append((x[s:], y[s:]))
    return out
