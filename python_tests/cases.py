"""Shared small problems for the tests and benchmarks (append only: other test files use these).

Independent truths live here too: ``torch_func_per_sample_grads`` is the torch.func
vmap(grad) oracle every per-sample-gradient test compares against.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hessext.models import Conv1DToolbox

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT_ROUNDOFF_FP32 = 2.0 ** -24   # u = eps/2 for float32 (round to nearest)


def shared_dir() -> Path | None:
    """The shared reference data (the original toolbox's model, Hessian and data): $HESSEXT_SHARED,
    else ../shared beside the repository root (or beside its parent, for a git worktree)."""
    candidates = [REPO_ROOT.parent / "shared", REPO_ROOT.parent.parent / "shared"]
    if os.environ.get("HESSEXT_SHARED"):
        candidates.insert(0, Path(os.environ["HESSEXT_SHARED"]))
    for candidate in candidates:
        if (candidate / "reference" / "hessian_toolbox_ll_cdw").is_dir():
            return candidate
    return None


def toolbox_dir() -> Path:
    """reference/hessian_toolbox_ll_cdw, or skip the test with the reason."""
    base = shared_dir()
    path = base / "reference" / "hessian_toolbox_ll_cdw" if base else None
    if path is None or not path.is_dir():
        pytest.skip("shared reference data (shared/reference/hessian_toolbox_ll_cdw) not found")
    return path


# ---------------------------------------------------------------------------------------------
# the Hessian-based toolbox's 740-parameter 1-D CNN (Luttinger liquid vs CDW-I)


# one definition of the architecture: the package's own (its state-dict keys match the checkpoint)
ToolboxCNN = Conv1DToolbox


def toolbox_model() -> ToolboxCNN:
    """The trained toolbox model (float32, eval mode), state dict loaded strictly."""
    model = ToolboxCNN()
    state = torch.load(toolbox_dir() / "Conv1D_original_l005_12site.pt", map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def toolbox_data(split: str = "test"):
    """(inputs [N, 1, 924] float32, labels [N] int64), min-max normalised with the global min
    and max over the validation and test rows together (README: reproduces the training
    normalisation to ~1e-5). split: "test" (50 rows) or "validation" (200 rows)."""
    base = toolbox_dir()
    test = np.loadtxt(base / "ED_size12_full_even_more_test.csv", delimiter=",")
    val = np.loadtxt(base / "ED_size12_full_validation.csv", delimiter=",")
    both = np.concatenate([val[:, 1:], test[:, 1:]])
    lo, hi = both.min(), both.max()
    rows = test if split == "test" else val
    x = torch.tensor((rows[:, 1:] - lo) / (hi - lo), dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(rows[:, 0], dtype=torch.int64)


TOOLBOX_LAMBDA, TOOLBOX_N_TRAIN = 0.05, 1000


# ---------------------------------------------------------------------------------------------
# small models for per-sample gradients


def mlp(sizes=(7, 13, 5, 3), act=nn.Tanh) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
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


def cnn1d():
    """Odd shapes, stride, dilation, groups, padding, and a 'same' conv."""
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, stride=2, padding=3, dilation=2), nn.ReLU(),
        nn.Conv1d(6, 4, 3, groups=2, padding="same"), nn.Tanh(),
        nn.Conv1d(4, 3, 1, bias=False), nn.Flatten(), nn.Linear(3 * 16, 4))


def cnn2d():
    return nn.Sequential(
        nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3),
        nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1, stride=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(5 * 2 * 6, 3))


def mixed_cnn():
    """Kernel layers mixed with fallback layers (BatchNorm in eval mode, LayerNorm)."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.LayerNorm(4 * 5 * 5), nn.Linear(100, 7), nn.ReLU(), nn.Dropout(0.3), nn.Linear(7, 3))
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def per_sample_cases():
    """(name, model factory, inputs factory(N, dtype), targets factory(N), n_classes)."""
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
    """Benchmark (a): MLP 784-256-256-10."""
    return mlp((784, 256, 256, 10), act=nn.ReLU)


def bench_cnn():
    """Benchmark (b): CNN on 1×28×28."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 10))


# ---------------------------------------------------------------------------------------------
# oracles and tolerances


def torch_func_per_sample_grads(model, loss_fn, inputs, targets, params=None) -> torch.Tensor:
    """The independent truth: torch.func vmap(grad) of functional_call, [N, P] in
    named_parameters() order (model in eval mode, left in its mode)."""
    names = [n for n, p in model.named_parameters() if params is None or n in params]
    mode = model.training
    model.eval()
    try:
        theta = {n: p.detach() for n, p in model.named_parameters() if n in names}
        fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
        fixed.update(dict(model.named_buffers()))

        def loss_one(theta, x, y):
            out = torch.func.functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0)).sum()

        g = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(theta, inputs, targets)
    finally:
        model.train(mode)
    return torch.cat([g[n].reshape(inputs.shape[0], -1) for n in names], 1)


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


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖_F / ‖want‖_F in float64."""
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(1e-300))
