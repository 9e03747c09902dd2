"""The per-sample test cases of the peers, ported: BackPACK's first-order problem set
(test/extensions/firstorder/firstorder_settings.py: Linear with extra axes, the automated CNN
settings, BatchNorm in eval mode, RNN/LSTM with tuple reduction and permutes, Embedding) and
Opacus' per-sample layer grid (opacus/tests/grad_samples/*: Linear, Conv1d/2d with their
padding/stride/dilation/groups grid, the norms, Embedding, RNN/GRU/LSTM with num_layers,
bidirectional and batch_first, multi-head attention), each as a model of our contract (the batch
on dim 0: a batch_first=False layer is wrapped between transposes, as a user would) and checked
against one autograd call per example in float64, for per_sample_grads and PerSampleGrads.

Our own ports of their case lists (read, not copied). Conventions differ where ours are
documented: the loss is per example (the peers' mean reduction scales by 1/N), and eval mode.
Tolerance: float64, dot products of length <= ~200, so rounding <= 1e-13; TOL = 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import hessext
from hessext.testing import assert_same_state, model_state, reference_grads, relative_error

TOL = 1e-10


def _ce_over_positions(out, y):
    """Cross-entropy over classes on dim 1 (BackPACK's [N, C, ...] layout), summed over the
    other axes: one loss per example."""
    return F.cross_entropy(out, y, reduction="none").reshape(out.shape[0], -1).sum(1)


def _squares(out, y):
    """0.5·‖out - y‖² per example (any output shape)."""
    return 0.5 * (out - y).square().reshape(out.shape[0], -1).sum(1)


def _ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


class TupleFirst(nn.Module):
    """BackPACK's ReduceTuple(index=0): the first element of a recurrent layer's output."""

    def forward(self, out):
        return out[0]


class Permute(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def _frozen_head(model):
    model[-1].requires_grad_(False)  # BackPACK freezes the automated CNNs' head "to save run time"
    return model


def _cnn_setting(conv, in_shape):
    """BackPACK's make_simple_cnn_setting: conv → ReLU → Flatten → Linear(·, 5) (head frozen)."""
    with torch.no_grad():
        features = conv(torch.zeros(1, *in_shape)).numel()
    return _frozen_head(nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(features, 5)))


def _classes(n, c, *extra):
    return lambda: torch.randint(0, c, (n, *extra))


def _regression(*shape):
    return lambda: torch.randn(*shape, dtype=torch.float64)


# (id, model factory, input shape, target factory, loss) — BackPACK's FIRSTORDER_SETTINGS
BACKPACK_FIRST_ORDER = [
    ("example", lambda: nn.Sequential(nn.Linear(10, 5)), (3, 10), _classes(3, 5), _ce),
    ("linear-linear", lambda: nn.Sequential(nn.Linear(10, 7), nn.Linear(7, 5)), (3, 10), _classes(3, 5), _ce),
    (
        "linear-relu-linear",
        lambda: nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 5)),
        (3, 10),
        _classes(3, 5),
        _ce,
    ),
    (
        "linear-sigmoid-linear-mse",
        lambda: nn.Sequential(nn.Linear(10, 7), nn.Sigmoid(), nn.Linear(7, 5)),
        (3, 10),
        _regression(3, 5),
        _squares,
    ),
    (
        "one-additional-mse",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)),
        (3, 4, 5),
        _regression(3, 4, 2),
        _squares,
    ),
    (
        "two-additional-mse",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Sigmoid(), nn.Linear(3, 2)),
        (3, 4, 2, 5),
        _regression(3, 4, 2, 2),
        _squares,
    ),
    (
        "three-additional-mse",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)),
        (3, 4, 2, 3, 5),
        _regression(3, 4, 2, 3, 2),
        _squares,
    ),
    (
        "one-additional-ce",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2), nn.Flatten()),
        (3, 4, 5),
        _classes(3, 8),
        _ce,
    ),
    (
        "three-additional-ce",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2), nn.Flatten()),
        (3, 4, 2, 3, 5),
        _classes(3, 48),
        _ce,
    ),
    ("conv1d", lambda: _cnn_setting(nn.Conv1d(3, 2, 2), (3, 7)), (3, 3, 7), _classes(3, 5), _ce),
    (
        "conv1d-dilation-stride",
        lambda: _cnn_setting(nn.Conv1d(2, 3, 2, 2, 0, 2), (2, 7)),
        (3, 2, 7),
        _classes(3, 5),
        _ce,
    ),
    (
        "conv1d-stride-padding",
        lambda: _cnn_setting(nn.Conv1d(3, 2, 2, 2, 1), (3, 7)),
        (3, 3, 7),
        _classes(3, 5),
        _ce,
    ),
    (
        "conv1d-stride-padding-dilation",
        lambda: _cnn_setting(nn.Conv1d(3, 6, 2, 4, 2, 3), (3, 8)),
        (3, 3, 8),
        _classes(3, 5),
        _ce,
    ),
    (
        "conv1d-no-bias",
        lambda: _cnn_setting(nn.Conv1d(3, 2, 2, 4, 2, 1, 1, False), (3, 7)),
        (3, 3, 7),
        _classes(3, 5),
        _ce,
    ),
    ("conv2d", lambda: _cnn_setting(nn.Conv2d(3, 2, 2), (3, 7, 7)), (3, 3, 7, 7), _classes(3, 5), _ce),
    (
        "conv2d-dilation-stride",
        lambda: _cnn_setting(nn.Conv2d(2, 3, 2, 2, 0, 2), (2, 7, 7)),
        (3, 2, 7, 7),
        _classes(3, 5),
        _ce,
    ),
    (
        "conv2d-stride-padding-dilation",
        lambda: _cnn_setting(nn.Conv2d(3, 6, 2, 4, 2, 3), (3, 8, 8)),
        (3, 3, 8, 8),
        _classes(3, 5),
        _ce,
    ),
    (
        "conv2d-no-bias",
        lambda: _cnn_setting(nn.Conv2d(3, 2, 2, 4, 2, 1, 1, False), (3, 7, 7)),
        (3, 3, 7, 7),
        _classes(3, 5),
        _ce,
    ),
    # no native kernel: torch.func serves them, exactly
    ("conv3d", lambda: _cnn_setting(nn.Conv3d(3, 2, 2), (3, 2, 5, 5)), (3, 3, 2, 5, 5), _classes(3, 5), _ce),
    (
        "convtranspose1d",
        lambda: _cnn_setting(nn.ConvTranspose1d(3, 2, 2), (3, 7)),
        (3, 3, 7),
        _classes(3, 5),
        _ce,
    ),
    (
        "convtranspose2d-stride-dilation",
        lambda: _cnn_setting(nn.ConvTranspose2d(2, 4, 2, 1, 0, 0, 1, True, 2), (2, 5, 5)),
        (3, 2, 5, 5),
        _classes(3, 5),
        _ce,
    ),
    ("batchnorm1d-eval", lambda: nn.BatchNorm1d(3), (2, 3, 4), _classes(2, 3, 4), _ce_over_positions),
    ("batchnorm2d-eval", lambda: nn.BatchNorm2d(2), (3, 2, 4, 3), _classes(3, 2, 4, 3), _ce_over_positions),
    (
        "batchnorm3d-linear-relu",
        lambda: nn.Sequential(
            nn.BatchNorm3d(3), nn.Linear(2, 3), nn.BatchNorm3d(3), nn.ReLU(), nn.BatchNorm3d(3)
        ),
        (3, 3, 4, 1, 2),
        _classes(3, 3, 4, 1, 3),
        _ce_over_positions,
    ),
    (
        "rnn-permute-ce",
        lambda: nn.Sequential(nn.RNN(6, 3, batch_first=True), TupleFirst(), Permute(0, 2, 1)),
        (8, 5, 6),
        _classes(8, 3, 5),
        _ce_over_positions,
    ),
    (
        "rnn-permute-flatten-mse",
        lambda: nn.Sequential(nn.RNN(6, 3, batch_first=True), TupleFirst(), Permute(0, 2, 1), nn.Flatten()),
        (8, 5, 6),
        _regression(8, 15),
        _squares,
    ),
    (
        "lstm-flatten-ce",
        lambda: nn.Sequential(nn.LSTM(3, 4, batch_first=True), TupleFirst(), nn.Flatten()),
        (4, 5, 3),
        _classes(4, 20),
        _ce,
    ),
    (
        "embedding-linear",
        lambda: nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 4)),
        "tokens(6,)/5",
        _classes(6, 4),
        _ce,
    ),
    (
        "embedding-flatten",
        lambda: nn.Sequential(nn.Embedding(3, 5), nn.Flatten()),
        "tokens(4,2,2)/3",
        _classes(4, 10),
        _ce,
    ),
]


def _inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    if isinstance(shape, str):  # "tokens(shape)/vocab"
        dims, vocab = shape[len("tokens(") :].split(")/")
        size = tuple(int(v) for v in dims.strip(",").split(",") if v)
        return torch.randint(0, int(vocab), size, generator=g)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _check(model, loss_fn, x, y):
    """per_sample_grads and PerSampleGrads against the float64 truth; the model untouched."""
    state = model_state(model)
    want = reference_grads(model, loss_fn, x, y)
    got = hessext.per_sample_grads(model, loss_fn, x, y)
    assert relative_error(got, want) <= TOL, relative_error(got, want)
    G = hessext.PerSampleGrads(model, loss_fn, x, y)
    V = torch.randn(want.shape[1], 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert relative_error(G @ V, want @ V) <= TOL
    assert relative_error(G.row_norms(), want.norm(dim=1)) <= TOL
    assert_same_state(model, state)
    return G


@pytest.mark.parametrize("case", BACKPACK_FIRST_ORDER, ids=[c[0] for c in BACKPACK_FIRST_ORDER])
def test_backpack_first_order_settings(case):
    _, make, shape, targets, loss_fn = case
    torch.manual_seed(0)
    model = _randomize_bn(make().double())
    x = _inputs(shape, 0)
    y = targets()
    if y.is_floating_point():
        y = y.to(torch.float64)
    _check(model, loss_fn, x, y)


# ---------------------------------------------------------------------------------------------
# Opacus' per-sample layer grid (opacus/tests/grad_samples), sampled by Hypothesis

_GRID = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


class BatchSecond(nn.Module):
    """A batch_first=False layer as a user of the batch-first contract wraps it: [N, T, ...] →
    [T, N, ...] → layer → back (Opacus' batch_first=False cases)."""

    def __init__(self, layer, tuple_out=False):
        super().__init__()
        self.layer, self.tuple_out = layer, tuple_out

    def forward(self, x):
        out = self.layer(x.transpose(0, 1))
        return (out[0] if self.tuple_out else out).transpose(0, 1)


class TupleOut(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


def _targets_like(model, x):
    with torch.no_grad():
        return torch.randn_like(model(x))


@_GRID
@given(
    n=st.integers(1, 4),
    z=st.integers(1, 4),
    h=st.integers(1, 3),
    w=st.integers(10, 17),
    input_dim=st.integers(2, 4),
    bias=st.booleans(),
    batch_first=st.booleans(),
)
def test_opacus_linear(n, z, h, w, input_dim, bias, batch_first):
    shape = {2: [n, w], 3: [n, z, w], 4: [n, z, h, w]}[input_dim]
    if input_dim == 2 and not batch_first:
        batch_first = True  # Opacus skips it: no second axis to put the batch on
    torch.manual_seed(0)
    layer = nn.Linear(w, w + 2, bias=bias).double()
    model = layer if batch_first else BatchSecond(layer)
    x = torch.randn(*shape, dtype=torch.float64)
    G = _check(model, _squares, x, _targets_like(model, x))
    if batch_first:  # the kernel serves it
        assert G.fallback_param_names == []


@_GRID
@given(
    n=st.integers(1, 4),
    c=st.sampled_from([1, 3, 8]),
    width=st.integers(6, 10),
    expand=st.booleans(),
    kernel=st.integers(2, 3),
    stride=st.integers(1, 2),
    padding=st.sampled_from([0, 1, 2, "same", "valid"]),
    dilation=st.integers(1, 2),
    groups=st.integers(1, 8),
    two_d=st.booleans(),
)
def test_opacus_conv(n, c, width, expand, kernel, stride, padding, dilation, groups, two_d):
    out_channels = 2 * c if expand else max(1, c // 2)
    if padding == "same" and stride != 1 or c % groups or out_channels % groups:
        return  # what Opacus skips: torch refuses these layers
    torch.manual_seed(0)
    cls = nn.Conv2d if two_d else nn.Conv1d
    layer = cls(c, out_channels, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    spatial = (width + 5, width) if two_d else (width,)
    x = torch.randn(n, c, *spatial, dtype=torch.float64)
    model = layer.double()
    G = _check(model, _squares, x, _targets_like(model, x))
    assert G.fallback_param_names == []  # stock convolutions: all on the kernels


@_GRID
@given(
    n=st.integers(1, 4),
    z=st.integers(1, 4),
    h=st.integers(1, 3),
    w=st.integers(5, 10),
    norm=st.sampled_from(["layer1", "layer2", "group", "instance"]),
)
def test_opacus_norms(n, z, h, w, norm):
    torch.manual_seed(0)
    if norm == "layer1":
        layer, x = nn.LayerNorm(w), torch.randn(n, z, w)
    elif norm == "layer2":
        layer, x = nn.LayerNorm([h, w]), torch.randn(n, z, h, w)
    elif norm == "group":
        c = 4 * z
        layer, x = nn.GroupNorm(math.gcd(c, 4), c), torch.randn(n, c, h + 4, w)
    else:
        layer, x = nn.InstanceNorm2d(z, affine=True), torch.randn(n, z, h + 4, w)
    model = layer.double()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.5)
    x = x.double()
    _check(model, _squares, x, _targets_like(model, x))


@_GRID
@given(
    n=st.integers(1, 4),
    t=st.integers(1, 5),
    vocab=st.integers(2, 32),
    d=st.integers(10, 17),
    dim=st.integers(2, 4),
)
def test_opacus_embedding(n, t, vocab, d, dim):
    torch.manual_seed(0)
    size = [n, t, 3, 2][:dim]
    model = nn.Embedding(vocab, d).double()
    x = torch.randint(0, vocab, size)
    _check(model, _squares, x, _targets_like(model, x))


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    cls=st.sampled_from([nn.RNN, nn.GRU, nn.LSTM]),
    n=st.integers(1, 3),
    t=st.integers(1, 3),
    d=st.integers(4, 5),
    hidden=st.integers(3, 4),
    num_layers=st.sampled_from([1, 2]),
    bias=st.booleans(),
    batch_first=st.booleans(),
    bidirectional=st.booleans(),
)
def test_opacus_recurrent(cls, n, t, d, hidden, num_layers, bias, batch_first, bidirectional):
    torch.manual_seed(0)
    rnn = cls(
        d, hidden, num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional
    )
    model = (TupleOut(rnn) if batch_first else BatchSecond(rnn, tuple_out=True)).double()
    x = torch.randn(n, t, d, dtype=torch.float64)
    G = _check(model, _squares, x, _targets_like(model, x))
    assert "one example at a time" in G.fallback_method  # torch.func cannot vmap them


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(1, 3),
    t=st.integers(3, 6),
    heads=st.sampled_from([1, 2]),
    bias=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
)
def test_opacus_multihead_attention(n, t, heads, bias, add_bias_kv, add_zero_attn):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(4, heads, bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn)

    class SelfAttention(nn.Module):  # Opacus' adapter, batch on dim 0 around a sequence-first layer
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            s = x.transpose(0, 1)
            return self.attn(s, s, s, need_weights=False)[0].transpose(0, 1)

    model = SelfAttention().double()
    x = torch.randn(n, t, 4, dtype=torch.float64)
    _check(model, _squares, x, _targets_like(model, x))
