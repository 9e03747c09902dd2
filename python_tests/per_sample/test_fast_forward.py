"""The ops of the per-sample capture's forward pass (hessext/per_sample/fast_forward.py) against torch,
the independent truth here:

- max_pool_forward / max_pool_backward (window == stride max pooling) against torch's
  max_pool2d / max_pool1d and their autograd gradients: the same values, the same chosen
  element (first maximum; the last NaN), the same gradient, bit for bit;
- conv_forward (direct convolution) against conv2d / conv1d in float64 (1e-12) and float32,
  with strides, padding, dilation, groups, no bias, and its gradients for x, weight and bias;

also the pure-torch references, opcheck, double backward, the routing mode (which calls it
takes, which it leaves to torch), and per-sample gradients of CNNs with and without the mode."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hessext
from hessext import _extension, ops
from hessext.ops import _reference
from hessext.per_sample import capture
from hessext.per_sample import fast_forward as _fast_forward
from hessext.per_sample.fast_forward import FastForward, relus_before_pools, small_conv, strided_max_pool

needs_ext = pytest.mark.skipif(not _extension.loaded, reason="compiled core not loaded")
DTYPES = [torch.float32, torch.float64]
# (shape [N, C, H, W], kernel): floor mode leaving rows and columns out, 1-D as H = 1,
# a window over the whole plane, batch size 1, a non-square window, and (last three) rows of
# several groups of four windows plus a remainder, as the CPU kernel's SIMD rows take them
SHAPES = [
    ((3, 4, 7, 9), (2, 2)),
    ((2, 3, 1, 23), (1, 4)),
    ((2, 2, 6, 7), (3, 2)),
    ((1, 1, 5, 5), (5, 5)),
    ((1, 2, 8, 8), (2, 4)),
    ((2, 3, 6, 21), (2, 2)),
    ((2, 2, 3, 37), (1, 4)),
    ((2, 2, 4, 39), (2, 4)),
]


def _input(shape, dtype, seed=0):
    """Random values with the hard cases planted: ties (a constant row segment, and ReLU-style
    zeros), -inf, NaN."""
    torch.manual_seed(seed)
    x = torch.randn(shape, dtype=dtype)
    x[0, 0, 0, :3] = 1.5
    x[-1, 0] = x[-1, 0].clamp_min(0)  # many zero ties, as after a ReLU
    x[0, -1, -1, 0] = float("-inf")
    x[-1, -1, 0, 0] = float("nan")
    x[-1, -1, 0, 1] = float("nan")  # two NaNs in one window: torch picks the last
    return x


def _torch_pool(x, kernel, **kw):
    return F.max_pool2d(x, kernel, return_indices=True, **kw)


def _assert_same(a, b):
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def _window_index(flat, W, Ho, Wo, kernel):
    """torch's flat plane index -> i*kW + j within the window."""
    kH, kW = kernel
    oh, ow = torch.arange(Ho).view(-1, 1), torch.arange(Wo).view(1, -1)
    return (flat // W - oh * kH) * kW + (flat % W - ow * kW)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel", SHAPES)
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_forward_and_backward_equal_torch(impl, shape, kernel, dtype):
    if impl == "kernel" and not _extension.loaded:
        pytest.skip("compiled core not loaded")
    fwd = torch.ops.hessext.max_pool_forward if impl == "kernel" else _reference.max_pool_forward
    bwd = torch.ops.hessext.max_pool_backward if impl == "kernel" else _reference.max_pool_backward
    x = _input(shape, dtype)
    y, idx = fwd(x, list(kernel))
    y_t, flat = _torch_pool(x, kernel)
    _assert_same(y, y_t)
    assert idx.dtype == torch.uint8
    assert torch.equal(idx.long(), _window_index(flat, shape[3], *y_t.shape[2:], kernel))
    g = torch.randn_like(y)
    xr = x.clone().requires_grad_(True)
    (F.max_pool2d(xr, kernel) * g).sum().backward()
    assert torch.equal(bwd(g, idx, list(kernel), list(shape[2:])), xr.grad)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_autograd_and_double_backward(dtype):
    x = _input((2, 3, 6, 8), dtype).nan_to_num(0.0).clamp_min(-5)  # finite: gradcheck
    x = x + 1e-3 * torch.arange(x.numel(), dtype=dtype).view(x.shape)  # no ties: smooth
    xa = x.clone().requires_grad_(True)
    y = ops.max_pool_forward(xa, (2, 2))[0]
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad((y * g).sum(), xa, create_graph=True)
    xt = x.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad((F.max_pool2d(xt, 2) * g).sum(), xt, create_graph=True)
    assert torch.equal(gx, gt)
    if dtype == torch.float64:
        idx = ops.max_pool_forward(x, (2, 2))[1]
        torch.autograd.gradcheck(
            lambda dy: torch.ops.hessext.max_pool_backward(dy, idx, [2, 2], [6, 8]),
            (g.clone().requires_grad_(True),),
        )


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    x = _input((2, 3, 5, 6), dtype).nan_to_num(0.0)
    torch.library.opcheck(torch.ops.hessext.max_pool_forward, (x, [2, 3]))
    y, idx = torch.ops.hessext.max_pool_forward(x, [2, 3])
    torch.library.opcheck(torch.ops.hessext.max_pool_backward, (torch.randn_like(y), idx, [2, 3], [5, 6]))


@needs_ext
def test_bad_arguments_are_named():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match="max_pool_forward: x must be"):
        torch.ops.hessext.max_pool_forward(x[0], [2, 2])
    with pytest.raises(RuntimeError, match="max_pool_forward: the window"):
        torch.ops.hessext.max_pool_forward(x, [5, 1])
    with pytest.raises(RuntimeError, match="at most 256"):
        torch.ops.hessext.max_pool_forward(torch.randn(1, 1, 17, 17), [17, 17])
    with pytest.raises(RuntimeError, match="max_pool_forward: dtype"):
        torch.ops.hessext.max_pool_forward(x.half(), [2, 2])
    y, idx = torch.ops.hessext.max_pool_forward(x, [2, 2])
    with pytest.raises(RuntimeError, match="max_pool_backward: grad_out must be"):
        torch.ops.hessext.max_pool_backward(y, idx, [2, 2], [6, 4])
    with pytest.raises(RuntimeError, match="max_pool_backward: indices must be uint8"):
        torch.ops.hessext.max_pool_backward(y, idx.long(), [2, 2], [4, 4])
    with pytest.raises(RuntimeError, match="max_pool_backward: indices must be window positions"):
        torch.ops.hessext.max_pool_backward(y, torch.full_like(idx, 4), [2, 2], [4, 4])


# ---- the routing mode ------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize(
    "call,served",
    [
        (lambda x: F.max_pool2d(x, 2), True),
        (lambda x: F.max_pool2d(x, (2, 3), stride=(2, 3)), True),
        (lambda x: nn.MaxPool2d(2)(x), True),
        (lambda x: F.max_pool1d(x.flatten(2), 4), True),
        (lambda x: nn.MaxPool1d(3)(x.flatten(2)), True),
        (lambda x: F.max_pool2d(x, 2, stride=1), False),  # overlapping windows
        (lambda x: F.max_pool2d(x, 2, padding=1), False),
        (lambda x: F.max_pool2d(x, 2, dilation=2), False),
        (lambda x: F.max_pool2d(x, 2, ceil_mode=True), False),
        (lambda x: F.max_pool2d(x, 2, return_indices=True)[0], False),
        (lambda x: F.max_pool2d(x[0], 2), False),  # unbatched
    ],
)
def test_mode_serves_only_window_equal_stride(call, served, monkeypatch):
    calls = []
    real = ops.max_pool_forward
    monkeypatch.setattr(ops, "max_pool_forward", lambda *a: calls.append(1) or real(*a))
    x = _input((2, 3, 7, 9), torch.float64).nan_to_num(0.0).requires_grad_(True)
    with FastForward():
        y = call(x)
    want = call(x)
    assert bool(calls) == served
    assert torch.equal(y, want)
    g = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad((y * g).sum(), x)[0], torch.autograd.grad((want * g).sum(), x)[0])


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [F.relu, torch.relu, torch.Tensor.relu, nn.ReLU()])
def test_relu_then_pool_is_pooled_first_with_the_same_values_and_gradient(relu, dtype, monkeypatch):
    """pool(relu(x)) runs as relu(pool(x)) (the ReLU's backward on the smaller tensor): the
    same values and the same gradient w.r.t. x, also for windows that are all negative, hold
    ties, zeros, -inf or NaN (the planted cases of _input)."""
    pooled = []
    real = ops.max_pool_forward
    monkeypatch.setattr(ops, "max_pool_forward", lambda x, k: pooled.append(x) or real(x, k))
    x = _input((3, 4, 7, 9), dtype).requires_grad_(True)
    with FastForward():
        r = relu(x)
        y = F.max_pool2d(r, 2)
    want = F.max_pool2d(relu(x), 2)
    assert len(pooled) == 1 and pooled[0] is x  # the pooling read x, not relu(x)
    _assert_same(y, want)
    g = torch.randn_like(want)
    _assert_same(torch.autograd.grad((y * g).nansum(), x)[0], torch.autograd.grad((want * g).nansum(), x)[0])


def _relu_pool_net(pool):
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), pool, nn.Flatten(), nn.LazyLinear(2))


@needs_ext
@pytest.mark.parametrize("pool,served", [(nn.MaxPool2d(2), True), (nn.MaxPool2d(3, stride=1), False)])
def test_relu_module_before_pool_is_applied_after_it(pool, served, monkeypatch):
    """FastForward(model): an nn.ReLU that a Sequential feeds straight into a max pooling returns
    its input, and the pooling rectifies its own result (hessext's op) or its input (torch's
    pooling, when the op does not serve it): the model's outputs and gradients, unchanged;
    the deferral's pre-hooks are gone afterwards."""
    net = _relu_pool_net(pool)
    x = torch.randn(4, 2, 9, 10, dtype=torch.float64)
    net = net.double()
    net(x)  # materialise the lazy layer
    assert _fast_forward.relus_before_pools(net) == {net[1]: net}
    relu_inputs = []
    real_relu = torch.relu
    monkeypatch.setattr(torch, "relu", lambda t: relu_inputs.append(t.shape) or real_relu(t))
    xr = x.clone().requires_grad_(True)
    with FastForward(net):
        y = net(xr)
    assert not net[1]._forward_pre_hooks and not net._forward_pre_hooks and not net._forward_hooks
    monkeypatch.undo()
    want_x = x.clone().requires_grad_(True)
    want = net(want_x)
    assert torch.equal(y, want)
    # the ReLU ran once, on the pooled tensor (served) or on the conv output (torch's pooling)
    pooled_shape = F.max_pool2d(torch.empty(4, 3, 7, 8), 2).shape
    assert relu_inputs == ([pooled_shape] if served else [torch.Size([4, 3, 7, 8])])
    g = torch.randn_like(want)
    assert torch.equal(
        torch.autograd.grad((y * g).sum(), xr)[0], torch.autograd.grad((want * g).sum(), want_x)[0]
    )


def test_relu_module_with_hooks_or_in_place_or_shared_is_not_deferred():
    """A hook on the ReLU or the pooling (it could see or change the tensor between them), an
    in-place ReLU, a ReLU used twice in the model, or a Sequential subclass: no deferral."""
    net = _relu_pool_net(nn.MaxPool2d(2))
    net(torch.randn(1, 2, 9, 10))
    handle = net[1].register_forward_hook(lambda m, a, out: None)
    assert _fast_forward.relus_before_pools(net) == {}
    handle.remove()
    handle = net[2].register_forward_pre_hook(lambda m, a: None)
    assert _fast_forward.relus_before_pools(net) == {}
    handle.remove()
    net[1].inplace = True
    assert _fast_forward.relus_before_pools(net) == {}
    net[1].inplace = False
    assert _fast_forward.relus_before_pools(nn.Sequential(net, nn.Sequential(net[1]))) == {}

    class Routed(nn.Sequential):
        pass

    assert _fast_forward.relus_before_pools(Routed(*net)) == {}
    assert _fast_forward.relus_before_pools(net) == {net[1]: net}


@needs_ext
def test_deferrable_relu_called_outside_its_sequential_is_applied():
    """The same ReLU module called by other code than its Sequential (here a custom forward
    that also applies it to a second branch) is computed there as usual."""
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)).double()

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = seq

        def forward(self, x):
            side = self.seq[1](x - 0.5)  # the ReLU module, called directly
            return self.seq(x).sum((1, 2, 3)) + side.sum((1, 2, 3))

    net = TwoBranches()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert _fast_forward.relus_before_pools(net) == {seq[1]: seq}
    with FastForward(net):
        y = net(x)
    assert torch.equal(y, net(x))


@needs_ext
@pytest.mark.parametrize("change", ["relu output", "relu input", "another call between"])
def test_relu_then_pool_declines_when_something_came_between(change, monkeypatch):
    """Pooled in the given order when the ReLU's output or input changed in place, or another
    function ran in between."""
    pooled = []
    real = ops.max_pool_forward
    monkeypatch.setattr(ops, "max_pool_forward", lambda x, k: pooled.append(x) or real(x, k))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with FastForward():
        r = F.relu(x)
        if change == "relu output":
            r.mul_(-1.0)
        elif change == "relu input":
            x.mul_(-1.0)
        else:
            torch.sin(x)
        y = F.max_pool2d(r, 2)
    assert len(pooled) == 1 and pooled[0] is r
    assert torch.equal(y, F.max_pool2d(r, 2))


def test_mode_declines_what_the_op_cannot_serve(monkeypatch):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float16)
    assert strided_max_pool(F.max_pool2d, (x, 2), {}) is None  # dtype
    assert strided_max_pool(F.max_pool2d, (torch.randn(1, 1, 3, 3), 4), {}) is None  # too small
    assert strided_max_pool(F.avg_pool2d, (torch.randn(1, 1, 4, 4), 2), {}) is None
    # not a CPU tensor (on a GPU torch's cuDNN layers stay), even where a kernel would exist
    monkeypatch.setattr(ops, "uses_kernel", lambda op, *tensors: True)
    meta = torch.randn(2, 3, 4, 4, device="meta")
    assert strided_max_pool(F.max_pool2d, (meta, 2), {}) is None
    long_meta = torch.randn(1, 1, 600, device="meta")
    assert small_conv(torch.conv1d, (long_meta, torch.randn(2, 1, 3, device="meta")), {}) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_sample_grads_same_with_and_without_the_mode(dtype, monkeypatch):
    """Max-pooling CNNs (1-D and 2-D, ReLU before and after the pooling): the capture with
    hessext's pooling gives exactly the per-sample gradients of the capture with torch's, and
    both agree with torch.func."""
    torch.manual_seed(3)
    nets = [
        (
            nn.Sequential(
                nn.Conv2d(2, 4, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 3, 2),
                nn.MaxPool2d((2, 1)),
                nn.Flatten(),
                nn.LazyLinear(3),
            ),
            (5, 2, 13, 11),
        ),
        (
            nn.Sequential(
                nn.Conv1d(1, 3, 5, padding=1),
                nn.MaxPool1d(4),
                nn.ReLU(),
                nn.Conv1d(3, 2, 3),
                nn.MaxPool1d(2),
                nn.Flatten(),
                nn.LazyLinear(2),
            ),
            (6, 1, 41),
        ),
    ]
    ce = nn.CrossEntropyLoss(reduction="none")
    for net, shape in nets:
        x = torch.randn(shape)
        net(x)  # materialise the lazy layer
        net = net.to(dtype).eval()
        x, y = x.to(dtype), torch.randint(0, 2, (shape[0],))
        calls = []
        real = ops.max_pool_forward
        monkeypatch.setattr(ops, "max_pool_forward", lambda *a: calls.append(1) or real(*a))
        with_mode = hessext.per_sample_grads(net, ce, x, y)
        assert len(calls) == (2 if _extension.loaded else 0)  # both poolings took hessext's op
        monkeypatch.setattr(capture, "FastForward", contextlib.nullcontext)
        without = hessext.per_sample_grads(net, ce, x, y)
        monkeypatch.undo()
        assert torch.equal(with_mode, without)
        theta = {k: v.detach() for k, v in net.named_parameters()}
        grads = torch.func.vmap(
            torch.func.grad(
                lambda t, xi, yi: ce(torch.func.functional_call(net, t, (xi[None],)), yi[None]).sum()
            ),
            in_dims=(None, 0, 0),
        )(theta, x, y)
        want = torch.cat([grads[k].reshape(shape[0], -1) for k in theta], 1)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert float((with_mode - want).abs().max() / want.abs().max()) <= tol


# ---- conv_forward ------------------------------------------------------------------------------

# (x shape, weight shape, stride, padding, dilation, groups, bias)
CONVS = [
    ((3, 1, 1, 40), (4, 1, 1, 7), (1, 1), (0, 2), (1, 1), 1, True),  # Conv1d on one channel
    ((2, 3, 9, 11), (4, 3, 3, 2), (2, 1), (1, 1), (1, 2), 1, False),  # 2-D, odd everything
    ((2, 4, 7, 13), (6, 2, 2, 3), (1, 3), (0, 1), (2, 1), 2, True),  # groups, stride 3
    ((1, 2, 5, 5), (3, 2, 5, 5), (1, 1), (2, 2), (1, 1), 1, True),  # batch 1, kernel = input
]


def _conv_case(case, dtype, seed=1):
    xs, ws, stride, padding, dilation, groups, has_bias = case
    torch.manual_seed(seed)
    x, w = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype)
    b = torch.randn(ws[0], dtype=dtype) if has_bias else None
    return x, w, b, list(stride), list(padding), list(dilation), groups


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONVS)
def test_conv_forward_and_gradients_equal_torch(case, dtype):
    x, w, b, stride, padding, dilation, groups = _conv_case(case, dtype)
    leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if b is not None else ())]
    xa, wa, ba = leaves[0], leaves[1], leaves[2] if b is not None else None
    xt, wt, bt = (t.clone().detach().requires_grad_(True) if t is not None else None for t in (x, w, b))
    y = torch.ops.hessext.conv_forward(xa, wa, ba, stride, padding, dilation, groups)
    yt = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    scale = yt.detach().abs().max()
    assert y.shape == yt.shape and float((y - yt).detach().abs().max() / scale) <= tol
    g = torch.randn_like(yt)
    got = torch.autograd.grad(y, leaves, g)
    want = torch.autograd.grad(yt, [t for t in (xt, wt, bt) if t is not None], g)
    for a, e in zip(got, want):
        assert float((a - e).abs().max() / e.abs().max()) <= tol


@needs_ext
def test_conv_forward_double_backward_and_opcheck():
    x, w, b, stride, padding, dilation, groups = _conv_case(CONVS[1], torch.float64)
    torch.autograd.gradgradcheck(
        lambda x, w: torch.ops.hessext.conv_forward(x, w, None, stride, padding, dilation, groups),
        (x.requires_grad_(True), w.requires_grad_(True)),
    )
    for dtype in DTYPES:
        for case in CONVS:
            x, w, b, stride, padding, dilation, groups = _conv_case(case, dtype)
            torch.library.opcheck(
                torch.ops.hessext.conv_forward, (x, w, b, stride, padding, dilation, groups)
            )


@needs_ext
def test_conv_forward_bad_arguments_are_named():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3)
    with pytest.raises(RuntimeError, match="conv_forward: x must be"):
        torch.ops.hessext.conv_forward(x[0], w, None, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="do not fit groups"):
        torch.ops.hessext.conv_forward(x, w, None, [1, 1], [0, 0], [1, 1], 2)
    with pytest.raises(RuntimeError, match="conv_forward: bias must be"):
        torch.ops.hessext.conv_forward(x, w, torch.randn(4), [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="does not fit x"):
        torch.ops.hessext.conv_forward(x, torch.randn(3, 4, 9, 9), None, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="conv_forward: dtypes differ"):
        torch.ops.hessext.conv_forward(x, w.double(), None, [1, 1], [0, 0], [1, 1], 1)


@needs_ext
@pytest.mark.parametrize(
    "call,served",
    [
        (lambda x, w: F.conv1d(x, w, padding=1), True),
        (lambda x, w: nn.functional.conv1d(x, w, None, 1, "valid"), True),
        (lambda x, w: F.conv1d(x, w, stride=2), False),  # 347 columns: too short
        (lambda x, w: F.conv1d(x, w, padding="same"), False),  # torch pads
        (lambda x, w: F.conv1d(x[:, :, :300], w), False),  # rows shorter than 512
        (lambda x, w: F.conv1d(x.repeat(1, 4, 1), w.repeat(1, 4, 1)), False),  # 4 x 7 terms > 16
        (lambda x, w: F.conv1d(x[0], w), False),  # unbatched
    ],
)
def test_mode_serves_only_small_long_convolutions(call, served, monkeypatch):
    calls = []
    real = ops.conv_forward
    monkeypatch.setattr(ops, "conv_forward", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(2)
    x, w = torch.randn(2, 1, 700, dtype=torch.float64), torch.randn(3, 1, 7, dtype=torch.float64)
    with FastForward():
        y = call(x, w)
    want = call(x, w)
    assert bool(calls) == served
    assert float((y - want).abs().max()) <= 1e-12 * float(want.abs().max())


def test_small_conv_declines_what_the_op_cannot_serve():
    x = torch.randn(1, 1, 600)
    assert small_conv(torch.conv1d, (x.half(), torch.randn(2, 1, 3).half()), {}) is None
    assert small_conv(torch.conv2d, (x, torch.randn(2, 1, 3)), {}) is None  # conv2d on 3-D
    assert _fast_forward.LONG_CONV_ROWS > 1 and _fast_forward.SMALL_CONV_TERMS > 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_sample_grads_of_a_long_signal_cnn(dtype, monkeypatch):
    """The toolbox-style 1-D CNN on long inputs (its first convolution and both poolings run on
    hessext's ops): per-sample gradients as with torch's layers, and as torch.func's."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv1d(1, 3, 9, padding=1),
        nn.MaxPool1d(4),
        nn.ReLU(),
        nn.Conv1d(3, 4, 5),
        nn.MaxPool1d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(2),
    )
    x = torch.rand(7, 1, 600)
    net(x)
    net = net.to(dtype).eval()
    x, y = x.to(dtype), torch.randint(0, 2, (7,))
    ce = nn.CrossEntropyLoss(reduction="none")
    calls = []
    real = ops.conv_forward
    monkeypatch.setattr(ops, "conv_forward", lambda *a: calls.append(1) or real(*a))
    with_mode = hessext.per_sample_grads(net, ce, x, y)
    assert calls == ([1] if _extension.loaded else [])
    monkeypatch.setattr(capture, "FastForward", contextlib.nullcontext)
    without = hessext.per_sample_grads(net, ce, x, y)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert float((with_mode - without).abs().max() / without.abs().max()) <= tol
    theta = {k: v.detach() for k, v in net.named_parameters()}
    grads = torch.func.vmap(
        torch.func.grad(
            lambda t, xi, yi: ce(torch.func.functional_call(net, t, (xi[None],)), yi[None]).sum()
        ),
        in_dims=(None, 0, 0),
    )(theta, x, y)
    want = torch.cat([grads[k].reshape(7, -1) for k in theta], 1)
    assert float((with_mode - want).abs().max() / want.abs().max()) <= tol


def test_relu_deferral_only_for_stock_modules():
    """The deferred ReLU needs the stock nn.ReLU, pooling and Sequential (modules.not_stock):
    a replaced forward or a hook on any of them keeps the model as written."""

    def model():
        return nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.MaxPool1d(2))

    m = model()
    assert list(relus_before_pools(m)) == [m[1]]
    m = model()
    m[1].forward = lambda x: x  # replaced on the instance
    assert relus_before_pools(m) == {}
    m = model()
    m.register_forward_pre_hook(lambda mod, a: None)
    assert relus_before_pools(m) == {}
    m = model()
    m[2].register_forward_hook(lambda mod, a, o: None)
    assert relus_before_pools(m) == {}
