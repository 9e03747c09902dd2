"""Every public function × the models and habits users have (issue 15): each row either matches a
float64 truth computed without hessext or raises a clear error, and in every case — errors
included — the model comes back bit-identical and the data untouched.

Truths (hessext.testing): per-example gradients by one autograd call per example, the Hessian by
autograd double backward (torch.func's forward-over-reverse is 6-8 % off on LayerNorm in torch
2.13), the GGN from per-example autograd Jacobians and loss Hessians, and influence, RUE, the
extrapolation score and the alignment built from those by their defining formulas.

Tolerance: everything runs in float64 on P <= 100 parameters; the solves are damped to
λ_min(H + δI) = 0.5 with ‖H‖ <= ~10, so κ <= ~20 and the error is <= κ·P·eps ≈ 5e-13. TOL = 1e-9
leaves a margin of 2000 and is still 10⁷ times below the smallest error of the silently-wrong
rows this matrix was built from (14 % for an in-place ReLU, 46 % for a hooked Linear).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

import hessext
from hessext.testing import (
    BatchOffDim0,
    LogFirstFeature,
    SineLinear,
    assert_same_state,
    autograd_ggn,
    autograd_hessian,
    ce,
    model_state,
    reference_grads,
    reference_output_grads,
    relative_error,
)
from hessext.uncertainty.rue import bootstrap_counts

TOL = 1e-9
N, M, B = 6, 3, 4  # training examples, test examples, bootstrap models


# ---------------------------------------------------------------------------------------------
# the rows: a model, its data and what each API must do with it


@dataclass
class Case:
    model: object
    X: torch.Tensor
    y: torch.Tensor
    Xt: torch.Tensor
    yt: torch.Tensor
    loss_fn: Callable = ce
    context: Callable = contextlib.nullcontext  # around the hessext call only
    # {api or "*": (exception type, message regex) or None (exact)}
    errors: dict = field(default_factory=dict)
    nan_test_rows: tuple = ()  # test inputs where the model's output is not finite
    teardown: Callable | None = None  # undoes what building the row registered globally


def _data(shape=(4,), seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, *shape, generator=g, dtype=torch.float64)
    Xt = torch.randn(M, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (N,), generator=g)
    yt = torch.randint(0, classes, (M,), generator=g)
    return X, y, Xt, yt


def _mlp(act=nn.Tanh, *mods):
    return nn.Sequential(nn.Linear(4, 5), act(), *mods, nn.Linear(5, 3)).double()


def _cnn(relu=None, bn=False):
    layers = [nn.Conv1d(1, 2, 3)]
    if bn:
        layers.append(nn.BatchNorm1d(2))
    layers += [relu or nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2 * 4, 3)]
    model = nn.Sequential(*layers).double()
    if bn:
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.3, 0.3)
            model[1].running_var.uniform_(0.5, 1.5)
    return model


def _case(model, shape=(4,), **kw):
    return Case(model, *_data(shape), **kw)


class PlainLinear(nn.Linear):
    """A Linear subclass that keeps nn.Linear's forward."""


class CumTanh(nn.Tanh):
    """An 'activation' subclass that is not elementwise."""

    def forward(self, x):
        return torch.tanh(x).cumsum(-1)


class Recurrent(nn.Module):
    """[N, T, D] → recurrent layer (batch first) → last step → Linear."""

    def __init__(self, cls):
        super().__init__()
        self.rnn = cls(2, 3, batch_first=True)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class AttentionOverBatch(nn.Module):
    """nn.MultiheadAttention (batch_first=False) given [N, T, D]: it attends over the batch."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(2, 1)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


class Attention(nn.Module):
    """nn.MultiheadAttention over the sequence (batch first): examples stay apart."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(2, 1, batch_first=True)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def _hooked(hook_kind):
    model = _mlp()
    if hook_kind == "forward":
        model[0].register_forward_hook(lambda m, a, o: torch.sin(o))
    elif hook_kind == "pre":
        model[0].register_forward_pre_hook(lambda m, a: (a[0] * 2 + 0.5,))
    elif hook_kind == "model":
        model.register_forward_hook(lambda m, a, o: o * 2)
    elif hook_kind == "backward":
        model[0].register_full_backward_hook(lambda m, gi, go: None)
    return _case(model)


def _tied():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model[2].weight = model[0].weight
    return _case(model)


def _twice():
    shared = nn.Linear(4, 4)
    return _case(nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 3)).double())


def _frozen():
    model = _mlp()
    model[0].requires_grad_(False)
    return _case(model)


def _replaced_forward():
    model = _mlp()
    model[0].forward = types.MethodType(
        lambda self, x: torch.sin(F.linear(x, self.weight, self.bias)), model[0]
    )
    return _case(model)


def _nan_parameter():
    model = _mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    return _case(model, errors={"*": (ValueError, "non-finite")})


def _nan_input():
    case = _case(_mlp(), errors={"*": (ValueError, "non-finite")})
    case.X[1, 0] = float("nan")
    case.Xt[0, 2] = float("inf")
    return case


def _nan_output():
    """Finite inputs where the model's output is not: example 2 of the training set and test
    input 1. Alignment keeps the NaN to that row (and warns); everything else refuses."""
    case = _case(LogFirstFeature(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))).double())
    case.X[:, 0] = case.X[:, 0].abs() + 0.1
    case.Xt[:, 0] = case.Xt[:, 0].abs() + 0.1
    case.X[2, 0] = -1.0
    case.Xt[1, 0] = -1.0
    case.errors = {"*": (ValueError, "not finite|non-finite"), "alignment": None}
    case.nan_test_rows = (1,)
    return case


def _wrong_shape():
    case = _case(_mlp(), errors={"*": (ValueError, r"forward failed on inputs of shape \(\d+, 5\)")})
    case.X, case.Xt = torch.randn(N, 5, dtype=torch.float64), torch.randn(M, 5, dtype=torch.float64)
    return case


def _wrong_targets():
    case = _case(
        _mlp(),
        errors={
            "*": (ValueError, "targets has batch size 5"),
            "extrapolation_score": None,
            "alignment": None,
        },
    )
    case.y = case.y[:5]
    return case


def _integer_inputs():
    case = _case(_mlp(), errors={"*": (TypeError, "integer dtype")})
    case.X, case.Xt = torch.randint(0, 3, (N, 4)), torch.randint(0, 3, (M, 4))
    return case


def _closure_loss():
    model = _mlp()

    def loss_fn(out, y):  # the original toolbox's habit: the regulariser written into the loss
        return ce(out, y) + 1e-3 * sum(p.square().sum() for p in model.parameters())

    return _case(
        model,
        loss_fn=loss_fn,
        errors={"*": (ValueError, "regularizer="), "extrapolation_score": None, "alignment": None},
    )


def _global_hook():
    handle = module_globals.register_module_forward_hook(
        lambda m, a, o: o * 1.25 if type(m) is nn.Linear else None
    )
    case = _case(_mlp())
    case.teardown = handle.remove
    return case


def _callable():
    case = _case(_mlp(), errors={"*": (TypeError, "must be a torch.nn.Module")})
    weight = torch.randn(3, 4, dtype=torch.float64)
    case.model = lambda x: x @ weight.T
    return case


def _meta():
    return _case(_mlp().to("meta"), errors={"*": (ValueError, "meta device")})


# Interacting examples: only the Hessian of the mean loss over the batch as given is defined.
_INTERACT = {
    "*": (ValueError, "depends on the other examples|no running statistics"),
    "hessian": None,
    "hessian_operator": None,
}

ROWS: dict[str, Callable[[], Case]] = {
    "mlp": lambda: _case(_mlp()),
    "mlp under no_grad": lambda: _case(_mlp(), context=torch.no_grad),
    "mlp under inference_mode": lambda: _case(_mlp(), context=torch.inference_mode),
    "mlp in train mode with dropout": lambda: _case(_mlp(nn.Tanh, nn.Dropout(0.5)).train()),
    "linear subclass with its own forward": lambda: _case(
        nn.Sequential(nn.Linear(4, 5), nn.Tanh(), SineLinear(5, 3)).double()
    ),
    "linear subclass keeping the forward": lambda: _case(
        nn.Sequential(PlainLinear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    ),
    "activation subclass not elementwise": lambda: _case(_mlp(CumTanh)),
    "forward hook changing an output": lambda: _hooked("forward"),
    "forward pre-hook changing an input": lambda: _hooked("pre"),
    "forward hook on the model": lambda: _hooked("model"),
    "global forward hook": _global_hook,
    "forward replaced on the instance": _replaced_forward,
    "full backward hook": lambda: _with_errors(_hooked("backward"), {"*": (ValueError, "backward hook")}),
    "tied weights": _tied,
    "module used twice": _twice,
    "frozen parameters": _frozen,
    "relu inplace after linear": lambda: _case(_mlp(lambda: nn.ReLU(inplace=True))),
    "relu inplace on the input": lambda: _case(
        nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    ),
    "prelu": lambda: _case(_mlp(nn.PReLU)),
    "layernorm": lambda: _case(_mlp(nn.Tanh, nn.LayerNorm(5))),
    "batchnorm without running stats": lambda: _case(
        _mlp(nn.Tanh, nn.BatchNorm1d(5, track_running_stats=False)), errors=_INTERACT
    ),
    "cnn": lambda: _case(_cnn(), shape=(1, 10)),
    "cnn relu inplace after conv": lambda: _case(_cnn(relu=nn.ReLU(inplace=True)), shape=(1, 10)),
    "cnn batchnorm in train mode": lambda: _case(_cnn(bn=True).train(), shape=(1, 10)),
    "cnn forward hook on the conv": lambda: _cnn_hooked(),
    "lstm": lambda: _case(Recurrent(nn.LSTM).double(), shape=(4, 2)),
    "gru": lambda: _case(Recurrent(nn.GRU).double(), shape=(4, 2)),
    "rnn": lambda: _case(Recurrent(nn.RNN).double(), shape=(4, 2)),
    "batch moved off dim 0 (T == N)": lambda: _case(BatchOffDim0().double(), shape=(N, 2)),
    "attention (batch first)": lambda: _case(Attention().double(), shape=(5, 2)),
    "attention over the batch axis": lambda: _case(
        AttentionOverBatch().double(), shape=(5, 2), errors=_INTERACT
    ),
    "non-finite input": _nan_input,
    "non-finite parameter": _nan_parameter,
    "finite input, non-finite output": _nan_output,
    "wrong input shape": _wrong_shape,
    "wrong target length": _wrong_targets,
    "integer inputs": _integer_inputs,
    "loss closing over the parameters": _closure_loss,
    "plain callable model": _callable,
    "meta-device model": _meta,
}


def _with_errors(case, errors):
    case.errors = errors
    return case


def _cnn_hooked():
    model = _cnn()
    model[0].register_forward_hook(lambda m, a, o: o * 1.5 + 0.25)
    return _case(model, shape=(1, 10))


@contextlib.contextmanager
def built(row: str):
    case = ROWS[row]()
    try:
        yield case
    finally:
        if case.teardown is not None:
            case.teardown()


def _expectation(case: Case, api: str):
    return case.errors.get(api, case.errors.get("*"))


# ---------------------------------------------------------------------------------------------
# the APIs and their truths


def _probe_vectors(P, k, seed):
    return torch.randn(P, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _eval64(model):
    return copy.deepcopy(model).to(torch.float64).eval()


class Truths:
    """The float64 references of a row, each computed when first asked for (a row whose API
    must refuse may have no reference at all: then only sizes and a stand-in damping)."""

    def __init__(self, case: Case, exact: bool):
        self.c, self.exact = case, exact
        model = case.model
        self.P = (
            sum(p.numel() for p in model.parameters() if p.requires_grad)
            if isinstance(model, nn.Module)
            else 43
        )
        # extrapolation_score and alignment take a given Hessian and eigenvectors: a fixed
        # symmetric matrix with distinct positive eigenvalues serves (the truth uses the same)
        Q, _ = torch.linalg.qr(_probe_vectors(self.P, self.P, 7))
        self.probe_H = Q @ torch.diag(torch.linspace(0.1, 3.0, self.P, dtype=torch.float64)) @ Q.T
        self.V = Q[:, -3:]

    @functools.cached_property
    def per_sample_grads(self):
        c = self.c
        return reference_grads(c.model, c.loss_fn, c.X, c.y)

    @functools.cached_property
    def hessian(self):
        return autograd_hessian(self.c.model, self.c.loss_fn, (self.c.X, self.c.y))

    @functools.cached_property
    def ggn(self):
        return autograd_ggn(self.c.model, self.c.loss_fn, (self.c.X, self.c.y))

    @functools.cached_property
    def damping(self):
        """λ_min(H + δI) = 0.5 (a stand-in 1.0 where the API must refuse anyway)."""
        return 0.5 - min(float(torch.linalg.eigvalsh(self.hessian)[0]), 0.0) if self.exact else 1.0

    def _damped(self):
        return self.hessian + self.damping * torch.eye(self.P, dtype=torch.float64)

    @functools.cached_property
    def influence(self):
        c = self.c
        Gt = reference_grads(c.model, c.loss_fn, c.Xt, c.yt)
        return self.per_sample_grads @ torch.linalg.solve(self._damped(), Gt.T) / N

    @functools.cached_property
    def relatif(self):
        """IF(z, t) / ‖H_δ⁻¹ g_z‖ (Barshan et al.)."""
        steps = torch.linalg.solve(self._damped(), self.per_sample_grads.T)  # [P, n]
        return self.influence / steps.norm(dim=0).unsqueeze(1)

    @functools.cached_property
    def self_influence(self):
        """g_zᵀ H_δ⁻¹ g_z."""
        G = self.per_sample_grads
        return (G * torch.linalg.solve(self._damped(), G.T).T).sum(1)

    @functools.cached_property
    def rue(self):
        """Var over θ_b = θ - H_δ⁻¹ Gᵀ(w_b - 1)/n of the outputs (the Newton-step bootstrap)."""
        c = self.c
        counts = bootstrap_counts(N, B, 0) - 1.0
        steps = torch.linalg.solve(self._damped(), self.per_sample_grads.T @ counts / N)  # [P, B]
        m64 = _eval64(c.model)
        chosen = [(n, p) for n, p in m64.named_parameters() if p.requires_grad]
        values = []
        for b in range(B):
            state, o = {}, 0
            for n, p in chosen:
                state[n] = p.detach() - steps[o : o + p.numel(), b].view(p.shape)
                o += p.numel()
            values.append(torch.func.functional_call(m64, state, (c.Xt.clone(),)).detach())
        return torch.stack(values).var(0, correction=0)

    @functools.cached_property
    def extrapolation_score(self):
        g = reference_output_grads(self.c.model, self.c.Xt, lambda out: out.max())
        U2 = torch.linalg.eigh(self.probe_H)[1][:, -2:]
        return (g - (g @ U2) @ U2.T).norm(dim=1)

    def alignment_of(self, X):
        g = reference_grads(self.c.model, ce, X, _eval64(self.c.model)(X.clone()).argmax(1))
        return (g @ self.V) / g.norm(dim=1, keepdim=True)

    @functools.cached_property
    def alignment(self):
        return self.alignment_of(self.c.Xt)


def _lazy(c, t):
    G = hessext.PerSampleGrads(c.model, c.loss_fn, c.X, c.y)
    V, W = _probe_vectors(t.P, 2, 1), _probe_vectors(N, 2, 2)
    return torch.cat([(G @ V).reshape(-1), (G.T @ W).reshape(-1), G.row_norms()])


def _lazy_truth(t):
    G = t.per_sample_grads
    V, W = _probe_vectors(t.P, 2, 1), _probe_vectors(N, 2, 2)
    return torch.cat([(G @ V).reshape(-1), (G.T @ W).reshape(-1), G.norm(dim=1)])


def _operator(c, t):
    return hessext.hessian_operator(c.model, c.loss_fn, (c.X, c.y)) @ _probe_vectors(t.P, 3, 3)


APIS: dict[str, tuple[Callable, Callable]] = {
    "per_sample_grads": (
        lambda c, t: hessext.per_sample_grads(c.model, c.loss_fn, c.X, c.y),
        lambda t: t.per_sample_grads,
    ),
    "PerSampleGrads": (_lazy, _lazy_truth),
    "hessian": (lambda c, t: hessext.hessian(c.model, c.loss_fn, (c.X, c.y)).dense(), lambda t: t.hessian),
    "ggn": (lambda c, t: hessext.ggn(c.model, c.loss_fn, (c.X, c.y)).dense(), lambda t: t.ggn),
    "hessian_operator": (_operator, lambda t: t.hessian @ _probe_vectors(t.P, 3, 3)),
    "influence": (
        lambda c, t: hessext.influence(c.model, c.loss_fn, (c.X, c.y), (c.Xt, c.yt), damping=t.damping),
        lambda t: t.influence,
    ),
    "relatif": (
        lambda c, t: hessext.relatif(c.model, c.loss_fn, (c.X, c.y), (c.Xt, c.yt), damping=t.damping),
        lambda t: t.relatif,
    ),
    "self_influence": (
        lambda c, t: hessext.self_influence(c.model, c.loss_fn, (c.X, c.y), damping=t.damping),
        lambda t: t.self_influence,
    ),
    "rue": (
        lambda c, t: hessext.rue(c.model, c.loss_fn, (c.X, c.y), c.Xt, n_bootstrap=B, damping=t.damping),
        lambda t: t.rue,
    ),
    "extrapolation_score": (
        lambda c, t: hessext.extrapolation_score(c.model, c.Xt, hessian=t.probe_H, n_removed=2),
        lambda t: t.extrapolation_score,
    ),
    "alignment": (lambda c, t: hessext.boundary.alignment(c.model, c.Xt, t.V), lambda t: t.alignment),
}


def _snapshot(case):
    data = [t.clone() for t in (case.X, case.y, case.Xt, case.yt)]
    return (model_state(case.model) if isinstance(case.model, nn.Module) else None), data


def _bits(t):
    return t.reshape(-1).view(torch.uint8) if t.is_floating_point() else t


def _check_untouched(case, snap):
    state, data = snap
    if state is not None:
        assert_same_state(case.model, state)
    for before, now in zip(data, (case.X, case.y, case.Xt, case.yt)):
        assert torch.equal(_bits(before), _bits(now)), "the caller's data changed"


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("row", list(ROWS))
def test_matrix(row, api):
    run, truth = APIS[api]
    with built(row) as case:
        expected = _expectation(case, api)
        t = Truths(case, exact=expected is None)
        snap = _snapshot(case)
        if expected is not None:
            exc, pattern = expected
            with pytest.raises(exc, match=pattern) as info, case.context():
                run(case, t)
            # one line that says who refused and why, not a raw torch traceback
            assert re.match(r"^[A-Za-z_.]+: ", str(info.value)), str(info.value)
        elif case.nan_test_rows:
            want = t.alignment_of(case.Xt[[i for i in range(M) if i not in case.nan_test_rows]])
            with pytest.warns(RuntimeWarning, match="not finite"), case.context():
                got = run(case, t)
            bad = list(case.nan_test_rows)
            keep = [i for i in range(got.shape[0]) if i not in bad]
            assert torch.isnan(got[bad]).all()
            assert relative_error(got[keep], want) <= TOL
        else:
            want = truth(t)  # before the context: the truths differentiate too
            with case.context():
                got = run(case, t)
            assert got.shape == want.shape
            err = relative_error(got, want)
            assert err <= TOL, f"{row} x {api}: relative error {err:.3g}"
        _check_untouched(case, snap)


def count_matrix() -> tuple[int, int]:
    """(exact, clear errors) over the matrix's cells."""
    exact = errors = 0
    for row in ROWS:
        with built(row) as case:
            for api in APIS:
                if _expectation(case, api) is None:
                    exact += 1
                else:
                    errors += 1
    return exact, errors


def test_matrix_covers_every_cell():
    exact, errors = count_matrix()
    assert exact + errors == len(ROWS) * len(APIS)
    assert exact > errors  # most habits are served exactly, not refused
