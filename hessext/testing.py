"""Oracles and small problems shared by hessext's tests (python_tests/) and benchmarks (bench/).

Independent truths use nothing of hessext: torch.func in float64 (vmap(grad) per-sample
gradients, torch.func.hessian / jacrev), one autograd call per example, closed forms. Also
here: the small models the tests run on, derived float32 tolerances, model-state snapshots
(everything a call must leave as it was), and the original toolbox's reference data, which
exists only beside a development checkout (``../shared``) and is never needed by the package.

pytest is imported lazily (the documented lazy load), only by the helpers that skip a test.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from hessext.datasets.fermions import load_reference_data
from hessext.models import Conv1DToolbox

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT_ROUNDOFF_FP32 = 2.0**-24  # u = eps/2 for float32 (round to nearest)

# the toolbox's training objective: mean CE + (λ/2n)‖θ‖², λ = 0.05, n = 1000
TOOLBOX_LAMBDA, TOOLBOX_N_TRAIN = 0.05, 1000


# ---------------------------------------------------------------------------------------------
# losses


def ce(out, y):
    """Per-example cross-entropy [N]."""
    return F.cross_entropy(out, y, reduction="none")


def mse(out, y):
    """Per-example squared error summed over outputs [N]."""
    return F.mse_loss(out, y, reduction="none").sum(1)


# ---------------------------------------------------------------------------------------------
# small models


def mlp(sizes=(7, 13, 5, 3), act=nn.Tanh) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between them: a module class (a fresh instance at
    each position) or an instance (the SAME module at every position, i.e. a module used
    several times in one forward)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act if isinstance(act, nn.Module) else act())
    return nn.Sequential(*layers)


class SequenceMLP(nn.Module):
    """Linear layers over a sequence axis [N, T, D], then mean over T."""

    def __init__(self, d=6, h=9, c=4):
        super().__init__()
        self.inner = nn.Linear(d, h)
        self.out = nn.Linear(h, c, bias=False)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(x))).mean(1)


class TiedMLP(nn.Module):
    """A weight used twice (shared between two Linear modules) and a module called twice."""

    def __init__(self, d=5):
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.b.weight = self.a.weight
        self.twice = nn.Linear(d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = torch.tanh(self.b(torch.tanh(self.a(x))))
        x = torch.tanh(self.twice(torch.tanh(self.twice(x))))
        return self.head(x)


class EmbeddingModel(nn.Module):
    """Integer tokens [N, T] → Embedding → LayerNorm → Linear over the sequence → mean."""

    def __init__(self, vocab=11, d=6, c=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, c)

    def forward(self, tokens):
        return self.proj(self.norm(self.emb(tokens))).mean(1)


class CNN1d(nn.Module):
    """Conv1d → MaxPool → ReLU → Linear, written as a custom forward (no layer chain)."""

    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(2 * 5, c)

    def forward(self, x):
        return self.fc(torch.relu(self.pool(self.conv(x))).flatten(1))


class CNN2d(nn.Module):
    """Conv2d → AvgPool → tanh → Linear, written as a custom forward (no layer chain)."""

    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(2 * 2 * 2, c)

    def forward(self, x):
        return self.fc(torch.tanh(self.pool(self.conv(x))).flatten(1))


class SineLinear(nn.Linear):
    """An nn.Linear subclass with its own forward (sin of the affine map): a module that no
    closed form may take for a Linear."""

    def forward(self, x):
        return torch.sin(super().forward(x))


class LogFirstFeature(nn.Module):
    """log of the first input feature, then ``net``: finite inputs with x[:, 0] <= 0 give
    non-finite outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.cat([torch.log(x[:, :1]), x[:, 1:]], 1))


class BatchOffDim0(nn.Module):
    """[N, T, D] → [T, N, D] around a Linear (a batch_first=False habit), then tanh, the mean over
    T and a head; with T == N the shapes alone cannot tell where the batch is."""

    def __init__(self, d=2, h=3, c=3):
        super().__init__()
        self.inner = nn.Linear(d, h)
        self.head = nn.Linear(h, c)

    def forward(self, x):
        h = self.inner(x.transpose(0, 1)).transpose(0, 1)
        return self.head(torch.tanh(h).mean(1))


def bn_mlp(c=3):
    """Linear → BatchNorm1d (non-trivial running statistics and affine) → Softplus → Linear."""
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Softplus(), nn.Linear(6, c))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.3, 0.3)
    return m


def cnn1d():
    """Odd shapes, stride, dilation, groups, padding, and a 'same' conv."""
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, stride=2, padding=3, dilation=2),
        nn.ReLU(),
        nn.Conv1d(6, 4, 3, groups=2, padding="same"),
        nn.Tanh(),
        nn.Conv1d(4, 3, 1, bias=False),
        nn.Flatten(),
        nn.Linear(3 * 16, 4),
    )


def cnn2d():
    """Grouped, strided, dilated Conv2d layers with odd shapes, then a Linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1, stride=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * 2 * 6, 3),
    )


def mixed_cnn():
    """Kernel layers mixed with fallback layers (BatchNorm in eval mode, LayerNorm)."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.LayerNorm(4 * 5 * 5),
        nn.Linear(100, 7),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(7, 3),
    )
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def per_sample_cases():
    """(name, model factory, inputs factory(N, dtype), targets factory(N))."""

    def floats(*shape):
        return lambda n, dtype: torch.randn(n, *shape, dtype=dtype)

    def classes(c):
        return lambda n: torch.randint(0, c, (n,))

    return [
        ("mlp", mlp, floats(7), classes(3)),
        ("sequence_mlp", SequenceMLP, floats(5, 6), classes(4)),
        ("cnn1d", cnn1d, floats(2, 33), classes(4)),
        ("cnn2d", cnn2d, floats(3, 7, 9), classes(3)),
        ("mixed_cnn", mixed_cnn, floats(2, 7, 7), classes(3)),
        ("tied_mlp", TiedMLP, floats(5), classes(3)),
        ("embedding", EmbeddingModel, lambda n, dtype: torch.randint(0, 11, (n, 4)), classes(3)),
    ]


def bench_mlp():
    """Per-sample benchmark MLP 784-256-256-10 (ReLU)."""
    return mlp((784, 256, 256, 10), act=nn.ReLU)


def bench_cnn():
    """Per-sample benchmark CNN on 1×28×28."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 10),
    )


def tiny_classifier(seed: int = 0, n: int = 12, m: int = 4, dtype=torch.float64):
    """MLP 3-4-3 (tanh), P = 31, mean cross-entropy; (model, loss_fn, (X, y), (Xt, yt))."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    Xt = torch.randn(m, 3, generator=g, dtype=dtype)
    yt = torch.randint(0, 3, (m,), generator=g)
    return model, nn.CrossEntropyLoss(), (X, y), (Xt, yt)


def data_for(kind, n, c=3, seed=0):
    """(x, y_ce, y_mse) float64 for the curvature test models: 'mlp' [n, 4], 'cnn1d'
    [n, 1, 10], 'cnn2d' [n, 1, 6, 6]."""
    g = torch.Generator().manual_seed(seed)
    shape = {"mlp": (n, 4), "cnn1d": (n, 1, 10), "cnn2d": (n, 1, 6, 6)}[kind]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y_ce = torch.randint(0, c, (n,), generator=g)
    y_mse = torch.randn(n, c, generator=g, dtype=torch.float64)
    return x, y_ce, y_mse


def uneven(x, y, sizes=(5, 1, 7)):
    """(x, y) split into mini-batches of uneven sizes (5, 1, 7, the rest)."""
    out, s = [], 0
    for k in sizes:
        out.append((x[s : s + k], y[s : s + k]))
        s += k
    out.append((x[s:], y[s:]))
    return out


def logistic_problem(n=200, d=6, seed=0, m=5):
    """Non-separable binary data: (X [n, d], y [n], Xt [m, d], yt [m]), float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + m, d, generator=g, dtype=torch.float64)
    beta = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(X @ beta + 0.3), generator=g)
    return X[:n], y[:n], X[n:], y[n:]


def newton_logistic(Xa, y, w, l2, theta):
    """argmin (1/Σw) Σ w_i BCE(x_iᵀθ, y_i) + (l2/2)‖θ‖², to gradient norm 1e-12 (the brute-force
    retraining that influence functions predict)."""
    total = w.sum()
    for _ in range(50):
        p = torch.sigmoid(Xa @ theta)
        grad = Xa.T @ (w * (p - y)) / total + l2 * theta
        if grad.norm() < 1e-12:
            return theta
        hess = (Xa.T * (w * p * (1 - p))) @ Xa / total + l2 * torch.eye(theta.numel(), dtype=theta.dtype)
        theta = theta - torch.linalg.solve(hess, grad)
    raise AssertionError("Newton did not converge")


# ---------------------------------------------------------------------------------------------
# independent truths (torch.func / autograd in float64)


def _copy64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(torch.float64).eval()


def flat_theta(model) -> torch.Tensor:
    """θ [P]: every parameter of ``model`` flattened in named_parameters() order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat_fn(model):
    """(θ0 [P], f(θ, x)) for a float64 eval-mode copy of ``model``."""
    m = _copy64(model)
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for _, p in m.named_parameters()]
    theta0 = flat_theta(m)
    buffers = dict(m.named_buffers())

    def f(theta, x):
        d, o = {}, 0
        for n_, s in zip(names, shapes):
            d[n_] = theta[o : o + s.numel()].view(s)
            o += s.numel()
        return functional_call(m, {**buffers, **d}, (x,))

    return theta0, f


def _mean_loss(loss_fn, out, y):
    value = loss_fn(out, y)
    return value.mean() if value.dim() > 0 else value


def reference_hessian(model, loss_fn, data, *, l2: float = 0.0) -> torch.Tensor:
    """∇²[mean loss + (l2/2)‖θ‖²] in float64, [P, P], by torch.func.hessian. ``loss_fn`` may
    return per-example losses (averaged here) or the mean itself."""
    x, y = data
    theta0, f = flat_fn(model)
    x = x.to(torch.float64) if x.is_floating_point() else x
    return torch.func.hessian(lambda th: _mean_loss(loss_fn, f(th, x), y) + 0.5 * l2 * th.pow(2).sum())(
        theta0
    )


def reference_ggn(model, loss: str, data, *, l2: float = 0.0) -> torch.Tensor:
    """(1/N) Σ J_iᵀ Λ_i J_i + l2·I in float64 with Λ in closed form: loss 'ce' (softmax
    Fisher diag(p) − ppᵀ) or 'mse' (2·I, for the per-example squared error summed over outputs)."""
    x, _ = data
    theta0, f = flat_fn(model)
    J = torch.func.jacrev(lambda th: f(th, x))(theta0)  # [N, C, P]
    out = f(theta0, x)
    N, C = out.shape
    if loss == "ce":
        p = out.softmax(1)
        Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        Lam = 2 * torch.eye(C, dtype=torch.float64).expand(N, C, C)
    G = torch.einsum("ncp,ncd,ndq->pq", J, Lam, J) / N
    return G + l2 * torch.eye(G.shape[0], dtype=torch.float64)


def _chosen(m64: nn.Module, params) -> list[tuple[str, torch.Tensor]]:
    """(name, parameter) of the float64 copy's parameters an oracle differentiates: those that
    require grad (hessext's default) or the given names."""
    named = list(m64.named_parameters())
    if params is None:
        return [(n, p) for n, p in named if p.requires_grad]
    return [(n, p) for n, p in named if n in set(params)]


def reference_grads(model, loss_fn, X, y, *, l2: float = 0.0, params=None) -> torch.Tensor:
    """[N, P] float64 rows ∇ℓ(z_i) + l2·θ, one autograd call per example (over the parameters
    that require grad, or the names ``params``)."""
    m64 = _copy64(model)
    chosen = [p for _, p in _chosen(m64, params)]
    theta = torch.cat([p.detach().reshape(-1) for p in chosen])
    rows = []
    for i in range(X.shape[0]):
        x = X[i : i + 1].to(torch.float64) if X.is_floating_point() else X[i : i + 1]
        loss = loss_fn(m64(x.clone()), y[i : i + 1]).sum()  # a model may write its input in place
        g = torch.autograd.grad(loss, chosen, allow_unused=True)
        flat = [(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(chosen, g)]
        rows.append(torch.cat(flat) + l2 * theta)
    return torch.stack(rows)


def _functional64(model, params=None):
    """(θ0 [P], f(θ, x)) of a float64 eval-mode copy over the chosen parameters (the others and
    the buffers fixed)."""
    m = _copy64(model)
    chosen = _chosen(m, params)
    names = [n for n, _ in chosen]
    shapes = [p.shape for _, p in chosen]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in chosen])
    fixed = {n: p.detach() for n, p in m.named_parameters() if n not in set(names)}
    fixed.update(dict(m.named_buffers()))

    def f(theta, x):
        d, o = {}, 0
        for n_, sh in zip(names, shapes):
            d[n_] = theta[o : o + sh.numel()].view(sh)
            o += sh.numel()
        x = x.to(torch.float64) if x.is_floating_point() else x
        # (the math attention kernel: the fused ones have no double backward)
        with sdpa_kernel(SDPBackend.MATH):
            return functional_call(m, {**fixed, **d}, (x.clone(),))  # a model may write its input

    return theta0, f


def autograd_hessian(model, loss_fn, data, *, l2: float = 0.0, params=None) -> torch.Tensor:
    """∇²[mean loss + (l2/2)‖θ‖²] [P, P] in float64 by autograd double backward, one backward
    per row: the truth where torch.func's forward-over-reverse is wrong (LayerNorm and
    batch-statistics BatchNorm, 6-8 % off in torch 2.13)."""
    x, y = data
    theta0, f = _functional64(model, params)
    th = theta0.clone().requires_grad_(True)
    loss = _mean_loss(loss_fn, f(th, x), y) + 0.5 * l2 * th.pow(2).sum()
    (g,) = torch.autograd.grad(loss, th, create_graph=True)
    rows = []
    for i in range(g.numel()):
        (r,) = torch.autograd.grad(g[i], th, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(th) if r is None else r)
    H = torch.stack(rows).detach()
    return (H + H.T) / 2


def autograd_hvp(model, loss_fn, data, V: torch.Tensor, *, params=None) -> torch.Tensor:
    """H V [P, k] of the mean loss in float64 by autograd double backward, one backward per
    column of V (for models whose full Hessian truth would cost P backward passes)."""
    x, y = data
    theta0, f = _functional64(model, params)
    th = theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_mean_loss(loss_fn, f(th, x), y), th, create_graph=True)
    cols = [torch.autograd.grad(g @ v.to(torch.float64), th, retain_graph=True)[0] for v in V.T]
    return torch.stack(cols, 1)


def autograd_ggn(model, loss_fn, data, *, params=None) -> torch.Tensor:
    """(1/N) Σ_i J_iᵀ Λ_i J_i [P, P] in float64 for any loss: J_i by one autograd call per
    example and output, Λ_i = ∂²ℓ_i/∂f_i² by double backward of loss_fn on that example alone."""
    x, y = data
    theta0, f = _functional64(model, params)
    th = theta0.clone().requires_grad_(True)
    total = torch.zeros(th.numel(), th.numel(), dtype=torch.float64)
    for i in range(x.shape[0]):
        out = f(th, x[i : i + 1]).reshape(-1)
        J = torch.stack(
            [
                (lambda r: torch.zeros_like(th) if r is None else r)(
                    torch.autograd.grad(out[c], th, retain_graph=True, allow_unused=True)[0]
                )
                for c in range(out.numel())
            ]
        )
        o = out.detach().clone().requires_grad_(True)
        li = loss_fn(o.view(1, *f(theta0, x[i : i + 1]).shape[1:]), y[i : i + 1]).sum()
        (go,) = torch.autograd.grad(li, o, create_graph=True)
        Lam = torch.stack(
            [
                (lambda r: torch.zeros_like(o) if r is None else r)(
                    torch.autograd.grad(go[c], o, retain_graph=True, allow_unused=True)[0]
                )
                for c in range(o.numel())
            ]
        )
        total += J.T @ ((Lam + Lam.T) / 2) @ J
    return total / x.shape[0]


def reference_output_grads(model, X, pick, *, params=None) -> torch.Tensor:
    """[N, P] float64 rows ∇θ pick(model(x_i)[0]), one autograd call per example (over the
    parameters that require grad, or the names ``params``)."""
    m64 = _copy64(model)
    chosen = [p for _, p in _chosen(m64, params)]
    rows = []
    for i in range(X.shape[0]):
        x = X[i : i + 1].to(torch.float64).clone()  # a model may write its input in place
        g = torch.autograd.grad(pick(m64(x)[0]), chosen, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(chosen, g)])
        )
    return torch.stack(rows)


def torch_func_per_sample_grads(model, loss_fn, inputs, targets, params=None) -> torch.Tensor:
    """Per-sample gradients by torch.func vmap(grad) of functional_call, [N, P] in
    named_parameters() order (model in eval mode, left in its mode)."""
    names = [n for n, p in model.named_parameters() if params is None or n in params]
    mode = model.training
    # functional_call on a module registered twice restores one of its slots to the swapped-in
    # tensor (torch 2.13): put every module's own parameter and buffer objects back afterwards
    slots = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    model.eval()
    try:
        theta = {n: p.detach() for n, p in model.named_parameters() if n in names}
        fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
        fixed.update(dict(model.named_buffers()))

        def loss_one(theta, x, y):
            out = functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0)).sum()

        g = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(theta, inputs, targets)
    finally:
        model.train(mode)
        for m, own_params, own_buffers in slots:
            m._parameters.clear()
            m._parameters.update(own_params)
            m._buffers.clear()
            m._buffers.update(own_buffers)
    return torch.cat([g[n].reshape(inputs.shape[0], -1) for n in names], 1)


# ---------------------------------------------------------------------------------------------
# tolerances and statistics


def relative_error(got: torch.Tensor, want: torch.Tensor, norm: str = "fro") -> float:
    """‖got − want‖ / ‖want‖ in float64: Frobenius norms (norm='fro') or largest entries
    (norm='max': max|got − want| / max|want|)."""
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    if norm == "max":
        return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))
    return float((got - want).norm() / want.norm().clamp_min(1e-300))


def reduction_lengths(model, inputs) -> int:
    """Σ over layers of the dot-product lengths in the chain that produces one entry of G:
    forward fan-in, backward fan-out, and the number of positions summed in the weight
    gradient (the float32 error bound's problem-size factor)."""
    total = []

    def hook(m, args, out):
        if isinstance(m, nn.Linear):
            t = math.prod(args[0].shape[1:-1])
            total.append(m.in_features + m.out_features + t)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            k = math.prod(m.kernel_size)
            total.append(k * (m.in_channels + m.out_channels) // m.groups + math.prod(out.shape[2:]))
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d)):
            total.append(math.prod(args[0].shape[1:]) if isinstance(m, nn.LayerNorm) else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for h in handles:
            h.remove()
    return max(1, sum(total))


def float32_tolerance(model, inputs) -> float:
    """Normwise relative error bound for float32 per-sample gradients: first-order rounding
    analysis gives a relative error ≤ K·u for a dot product of length K (γ_K, u = 2⁻²⁴); the
    errors of the chained dot products add to first order, so ‖ΔG‖/‖G‖ ≤ u·Σ_l K_l."""
    return UNIT_ROUNDOFF_FP32 * reduction_lengths(model, inputs)


def pearson(a, b) -> float:
    """Pearson correlation of two vectors (float64)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def spearman(a, b) -> float:
    """Spearman rank correlation of two vectors (ties broken by order)."""

    def rank(v):
        return torch.as_tensor(v).argsort().argsort().to(torch.float64)

    return pearson(rank(a), rank(b))


# ---------------------------------------------------------------------------------------------
# the model is the user's: snapshots of everything a call must leave as it was


@dataclass
class ModelState:
    """Parameter and buffer objects of every module, their values and requires_grad flags, .grad
    objects and values, hooks, and train/eval modes. ``a == b`` compares all of it (values
    bit for bit, NaN included)."""

    slots: list
    values: list
    requires: list
    grads: list
    modes: list
    hooks: list

    def __eq__(self, other) -> bool:
        if not isinstance(other, ModelState):
            return NotImplemented
        return self.difference(other) is None

    def difference(self, other: ModelState) -> str | None:
        """What differs from ``other`` (None when nothing does)."""
        if self.slots != other.slots:
            return "parameter or buffer objects were replaced"
        if self.requires != other.requires:
            return "requires_grad flags changed"
        if self.modes != other.modes:
            return "train/eval modes changed"
        if self.hooks != other.hooks:
            return "hooks changed"
        for a, b in zip(self.values, other.values):
            if not _bit_equal(a, b):
                return "parameter or buffer values changed"
        for (ia, ga), (ib, gb) in zip(self.grads, other.grads):
            if ia != ib or (ga is None) != (gb is None) or (ga is not None and not _bit_equal(ga, gb)):
                return ".grad changed"
        return None


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (NaN payloads included), as the promise "exactly as before" means (meta
    tensors have no values: their dtype and shape)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.is_meta != b.is_meta:
        return False
    if a.is_meta:
        return True
    a, b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.numel() else True


def model_state(model: nn.Module) -> ModelState:
    """A snapshot of everything a hessext call promises to leave as it was."""
    modules = list(model.modules())
    params = list(model.parameters())
    tensors = params + list(model.buffers())
    hook_names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
    )
    return ModelState(
        slots=[
            (
                tuple((k, id(v)) for k, v in m._parameters.items()),
                tuple((k, id(v)) for k, v in m._buffers.items()),
            )
            for m in modules
        ],
        values=[t.detach().clone() for t in tensors],
        requires=[p.requires_grad for p in params],
        grads=[(id(p.grad), None if p.grad is None else p.grad.clone()) for p in params],
        modes=[m.training for m in modules],
        hooks=[tuple(tuple(getattr(m, h, {}).items()) for h in hook_names) for m in modules],
    )


def assert_same_state(model: nn.Module, state: ModelState) -> None:
    """AssertionError saying what changed unless ``model`` is exactly as ``state`` recorded."""
    diff = model_state(model).difference(state)
    assert diff is None, diff


# ---------------------------------------------------------------------------------------------
# processes and threads


def run_python(code: str, *, disable_ext: bool, timeout: float = 300) -> str:
    """Run ``code`` in a fresh interpreter (optionally with HESSEXT_DISABLE_EXT=1) and return its
    stdout: how the tests check that the pure-torch fallback gives the kernels' answers."""
    env = dict(os.environ)
    if disable_ext:
        env.pop("HESSEXT_REQUIRE_EXT", None)
        env["HESSEXT_DISABLE_EXT"] = "1"
    else:
        env.pop("HESSEXT_DISABLE_EXT", None)
    # not the repository as working directory: `python -c` would import the source tree's
    # hessext (which has no compiled core) instead of the installed package
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{result.stderr}")
    return result.stdout


def run_distributed(code: str, *, world: int = 2, timeout: float = 300) -> list[str]:
    """Run ``code`` in ``world`` fresh interpreters that form a gloo process group (the code
    calls ``hessext.testing.init_gloo()`` first); returns each rank's stdout, rank order."""
    with tempfile.TemporaryDirectory() as d:
        procs = []
        for rank in range(world):
            env = {
                **os.environ,
                "HESSEXT_TEST_RANK": str(rank),
                "HESSEXT_TEST_WORLD": str(world),
                "HESSEXT_TEST_INIT": os.path.join(d, "init"),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code],
                    env=env,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=tempfile.gettempdir(),
                )
            )
        outs = []
        for rank, proc in enumerate(procs):
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise AssertionError(f"rank {rank} did not finish in {timeout} s") from None
            if proc.returncode != 0:
                raise AssertionError(f"rank {rank} failed:\n{err}")
            outs.append(out)
    return outs


def init_gloo() -> tuple[int, int]:
    """Join the process group ``run_distributed`` set up; returns (rank, world)."""
    import torch.distributed as dist

    rank, world = int(os.environ["HESSEXT_TEST_RANK"]), int(os.environ["HESSEXT_TEST_WORLD"])
    dist.init_process_group(
        "gloo", init_method=f"file://{os.environ['HESSEXT_TEST_INIT']}", rank=rank, world_size=world
    )
    return rank, world


def leave_gloo() -> None:
    """End a rank that ``run_distributed`` started, after its last collective. gloo's C++
    teardown races with the peer's (about 1 run in 15 aborted with "terminate called without an
    active exception" after the work was done), so a finished rank exits without it."""
    sys.stdout.flush()
    os._exit(0)


@contextlib.contextmanager
def single_thread():
    """Many tiny steps (retraining loops): intra-op threads only add synchronisation (4× slower
    on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# the original toolbox's reference data (development checkouts only)


def shared_dir() -> Path | None:
    """The shared reference data (the original toolbox's model, Hessian and data):
    $HESSEXT_SHARED, else a ``shared`` folder beside the working directory (the repository root,
    where the tests run) or beside one of its parents (a git worktree), or beside the source
    tree; None when absent."""
    here = Path.cwd().resolve()
    roots = [here, *list(here.parents)[:3], REPO_ROOT, REPO_ROOT.parent]
    candidates = [root.parent / "shared" for root in roots]
    if os.environ.get("HESSEXT_SHARED"):
        candidates.insert(0, Path(os.environ["HESSEXT_SHARED"]))
    for candidate in candidates:
        if (candidate / "reference" / "hessian_toolbox_ll_cdw").is_dir():
            return candidate
    return None


def toolbox_dir() -> Path:
    """reference/hessian_toolbox_ll_cdw, or skip the calling test with the reason."""
    base = shared_dir()
    if base is None:
        import pytest

        pytest.skip("shared reference data (shared/reference/hessian_toolbox_ll_cdw) not found")
    return base / "reference" / "hessian_toolbox_ll_cdw"


def toolbox_model() -> Conv1DToolbox:
    """The trained toolbox model (float32, eval mode), state dict loaded strictly."""
    model = Conv1DToolbox()
    state = torch.load(toolbox_dir() / "Conv1D_original_l005_12site.pt", map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def toolbox_data(split: str = "test"):
    """(inputs [N, 1, 924] float32, labels [N] int64), min-max normalised as the toolbox did
    (hessext.datasets.fermions.load_reference_data: with the training CSV absent, the global min
    and max over the validation and test rows together, which reproduces the training
    normalisation to ~1e-5). split: "test" (50 rows) or "validation" (200 rows)."""
    ref = load_reference_data(toolbox_dir())
    return ref.test if split == "test" else ref.validation


# ---------------------------------------------------------------------------------------------
# peers run in-process (optional packages, imported lazily)


def kronfluence_pairwise_scores(
    model: nn.Module,
    train,
    test,
    *,
    damping=None,
    strategy: str = "ekfac",
    batch_size: int = 256,
    query_batch_size: int = 100,
    empirical: bool = True,
    workdir=None,
) -> torch.Tensor:
    """Kronfluence's pairwise influence scores [m, n] (queries × training examples) of a
    cross-entropy classifier, on the CPU: EK-FAC (or ``strategy``) factors fitted with the
    empirical Fisher (the data labels) of the sum-reduced training loss, damping ``damping``
    (None: Kronfluence's 0.1 × mean eigenvalue per module). Runs on a deep copy (Kronfluence
    wraps the model's modules). Skips the calling test when kronfluence is not installed."""
    try:
        import kronfluence  # noqa: F401  (lazy: an optional peer)
    except ImportError:
        import pytest

        pytest.skip("kronfluence is not installed (pip install kronfluence with the torch pin)")
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    class _CrossEntropyTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            out = model(x)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(out.softmax(-1), 1).reshape(-1)
            return F.cross_entropy(out, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    task = _CrossEntropyTask()
    wrapped = prepare_model(copy.deepcopy(model).eval(), task)
    own = tempfile.TemporaryDirectory() if workdir is None else None
    out_dir = workdir if workdir is not None else own.name  # type: ignore[union-attr]
    try:
        analyzer = Analyzer("hessext", wrapped, task, cpu=True, disable_tqdm=True, output_dir=str(out_dir))
        train_set = torch.utils.data.TensorDataset(*train)
        test_set = torch.utils.data.TensorDataset(*test)
        factor_args = FactorArguments(strategy=strategy, use_empirical_fisher=empirical)
        analyzer.fit_all_factors(
            "factors",
            dataset=train_set,
            per_device_batch_size=batch_size,
            factor_args=factor_args,
            overwrite_output_dir=True,
        )
        score_args = ScoreArguments(damping_factor=damping)
        analyzer.compute_pairwise_scores(
            "scores",
            factors_name="factors",
            query_dataset=test_set,
            train_dataset=train_set,
            per_device_query_batch_size=query_batch_size,
            per_device_train_batch_size=batch_size,
            score_args=score_args,
            overwrite_output_dir=True,
        )
        return analyzer.load_pairwise_scores("scores")["all_modules"].to(torch.float64)
    finally:
        if own is not None:
            own.cleanup()
